//! Upstream sync against real servers: a `git daemon` on 127.0.0.1 serving a bare copy of the
//! publisher repository, `git upload-pack` for `file://`, and small TCP servers in the test
//! that cut a connection mid-pack or never answer.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::support::{Fleet, Result, run};

/// A port nobody listens on right now.
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `git daemon` serving every repository under `base`, killed when dropped.
pub(crate) struct GitDaemon {
    child: Child,
    port: u16,
}

impl GitDaemon {
    pub(crate) fn start(base: &Path) -> Result<Self> {
        let port = free_port()?;
        // git-daemon itself, not `git daemon`: killing the `git` wrapper would leave the
        // daemon it started running.
        let exec_path = run(Command::new("git").arg("--exec-path"))?;
        let child = Command::new(Path::new(&exec_path).join("git-daemon"))
            .args([
                "--reuseaddr",
                "--listen=127.0.0.1",
                &format!("--port={port}"),
                &format!("--base-path={}", base.display()),
                "--export-all",
            ])
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let daemon = GitDaemon { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err("git daemon did not start listening".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(daemon)
    }

    pub(crate) fn url(&self, repo: &str) -> String {
        format!("git://127.0.0.1:{}/{repo}", self.port)
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP proxy to `target` that closes each connection once it has passed `cut_after` bytes
/// from the server (`u64::MAX`: never). Stops accepting when dropped.
struct CutProxy {
    port: u16,
    cut_after: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CutProxy {
    fn start(target: u16, cut_after: u64) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let cut = Arc::new(AtomicU64::new(cut_after));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (cut, stop) = (cut.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            let limit = cut.load(Ordering::Relaxed);
                            std::thread::spawn(move || proxy(client, target, limit));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        Ok(CutProxy {
            port,
            cut_after: cut,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn proxy(client: TcpStream, target: u16, limit: u64) {
    let _ = client.set_nonblocking(false);
    let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
        return;
    };
    let (Ok(mut client_in), Ok(mut server_out)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut client_in, &mut server_out);
        let _ = server_out.shutdown(Shutdown::Write);
    });
    let (mut server_in, mut client_out) = (server, client);
    let mut passed = 0u64;
    let mut buf = [0u8; 4096];
    loop {
        let n = match server_in.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let n = n.min(usize::try_from(limit - passed).unwrap_or(usize::MAX));
        if client_out.write_all(&buf[..n]).is_err() {
            break;
        }
        passed += n as u64;
        if passed >= limit {
            break;
        }
    }
    let _ = client_out.shutdown(Shutdown::Both);
    let _ = server_in.shutdown(Shutdown::Both);
}

/// A fleet whose publisher repository has a signed commit with a large, poorly compressible
/// file, a bare copy of it under `served/fleet.git`, and a git daemon serving it.
struct Upstream {
    fleet: Fleet,
    daemon: GitDaemon,
    first: String,
}

impl Upstream {
    fn new() -> Result<Self> {
        let fleet = Fleet::new()?;
        let first = fleet.commit("files/blob", &noise(400_000))?;
        std::fs::create_dir(fleet.path("served"))?;
        run(Command::new("git")
            .args(["clone", "-q", "--bare"])
            .arg(fleet.repo())
            .arg(fleet.path("served/fleet.git")))?;
        let daemon = GitDaemon::start(&fleet.path("served"))?;
        let up = Upstream {
            fleet,
            daemon,
            first,
        };
        up.configure(&up.daemon.url("fleet.git"), "")?;
        Ok(up)
    }

    fn bare(&self) -> PathBuf {
        self.fleet.path("served/fleet.git")
    }

    /// Points `source.url` at `url`; `trust` is added to the `[trust]` section.
    fn configure(&self, url: &str, trust: &str) -> Result {
        self.fleet
            .write_config(&format!("{trust}\n[source]\nurl = \"{url}\"\n"))
    }

    /// Pushes the publisher's `main` to the served copy, forced.
    fn push(&self) -> Result {
        let bare = self.bare();
        self.fleet
            .git_run(&["push", "-q", "--force", &bare.display().to_string(), "main"])?;
        Ok(())
    }

    fn sync(&self) -> Result<(crate::support::Run, serde_json::Value)> {
        let run = self.fleet.outpost(&["sync", "--json"])?;
        let json = serde_json::from_str(run.stdout.trim())
            .map_err(|e| format!("sync printed no JSON ({e}): {}{}", run.stdout, run.stderr))?;
        Ok((run, json))
    }

    fn fsck(&self) -> Result {
        run(Command::new("git")
            .arg("--git-dir")
            .arg(self.fleet.state().join("objects"))
            .args(["fsck", "--strict", "--no-dangling"]))?;
        Ok(())
    }
}

/// `len` characters that deflate poorly, the same on every run.
fn noise(len: usize) -> String {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'!' + u8::try_from(x % 90).unwrap_or(0))
        })
        .collect()
}

#[test]
fn first_sync_trusts_the_signed_tip_and_the_next_fetches_only_what_is_new() -> Result {
    let up = Upstream::new()?;
    let url = up.daemon.url("fleet.git");
    let run = up.fleet.outpost(&["sync"])?;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.starts_with(&format!(
            "accepted {url}: {} \"update files/blob\" signed by fleet@example.com, first trusted commit (",
            &up.first[..12]
        )),
        "{}",
        run.stdout
    );
    assert_eq!(up.fleet.trusted()?.as_deref(), Some(up.first.as_str()));
    let tracked = run_git_dir(&up, &["rev-parse", "refs/heads/main"])?;
    assert_eq!(tracked, up.first);

    let second = up.fleet.commit("outpost.toml", "# second\n")?;
    up.push()?;
    let (run, json) = up.sync()?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(json["outcome"], "accepted");
    assert_eq!(json["commit"], second);
    assert_eq!(json["previous"], up.first);
    let incremental = json["bytes"].as_u64().ok_or("bytes")?;
    assert!(
        incremental < 20_000,
        "the second fetch carried {incremental} bytes: not incremental"
    );
    assert_eq!(up.fleet.trusted()?.as_deref(), Some(second.as_str()));

    let (run, json) = up.sync()?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(json["outcome"], "up-to-date");
    assert_eq!(json["commit"], second);
    up.fsck()?;

    let status = up.fleet.status()?;
    assert_eq!(status["sync"]["url"], url);
    assert_eq!(status["sync"]["last_success"]["outcome"], "up-to-date");
    assert!(status["sync"]["last_error"].is_null());
    // An accepted fetch is recorded like an accepted bundle: commit, mark, event.
    assert_eq!(status["trusted"]["signer"], "fleet@example.com");
    assert!(status["trusted"]["time"].is_string());
    Ok(())
}

fn run_git_dir(up: &Upstream, args: &[&str]) -> Result<String> {
    run(Command::new("git")
        .arg("--git-dir")
        .arg(up.fleet.state().join("objects"))
        .args(args))
}

/// Syncs the first commit, then pushes `tip` made by `make` and checks that the sync refuses
/// it with `reason`, records the refusal and leaves the object store as it was.
fn refused_after_first(up: &Upstream, reason: &str) -> Result {
    let run = up.fleet.outpost(&["sync"])?;
    assert!(run.stdout.starts_with("refused "), "{}", run.stdout);
    assert_eq!(run.code, 1);
    assert!(run.stdout.contains(reason), "{}", run.stdout);
    assert_eq!(up.fleet.trusted()?.as_deref(), Some(up.first.as_str()));
    let status = up.fleet.status()?;
    assert_eq!(status["sync"]["last_error"]["outcome"], "refused");
    assert!(
        status["sync"]["last_error"]["error"]
            .as_str()
            .is_some_and(|e| e.contains(reason)),
        "{status}"
    );
    Ok(())
}

#[test]
fn an_unsigned_upstream_tip_is_refused_and_nothing_is_kept() -> Result {
    let up = Upstream::new()?;
    assert_eq!(up.fleet.outpost(&["sync"])?.code, 0);
    let before = up.fleet.objects_snapshot()?;
    let unsigned = up.fleet.commit_as("outpost.toml", "# unsigned\n", None)?;
    up.push()?;
    refused_after_first(
        &up,
        &format!("tip commit {unsigned} of refs/heads/main is not signed"),
    )?;
    assert_eq!(up.fleet.objects_snapshot()?, before);
    // Refused again on the next attempt: nothing of the first refusal was kept.
    refused_after_first(&up, "is not signed")?;
    assert_eq!(up.fleet.objects_snapshot()?, before);
    Ok(())
}

#[test]
fn a_foreign_signed_upstream_tip_is_refused_and_nothing_is_kept() -> Result {
    let up = Upstream::new()?;
    crate::support::keygen(&up.fleet.key("stranger"))?;
    assert_eq!(up.fleet.outpost(&["sync"])?.code, 0);
    let before = up.fleet.objects_snapshot()?;
    let foreign = up
        .fleet
        .commit_as("outpost.toml", "# foreign\n", Some("stranger"))?;
    up.push()?;
    refused_after_first(
        &up,
        &format!("tip commit {foreign} of refs/heads/main refused"),
    )?;
    assert_eq!(up.fleet.objects_snapshot()?, before);
    Ok(())
}

#[test]
fn a_force_pushed_branch_is_refused_unless_allow_rewind() -> Result {
    let up = Upstream::new()?;
    let second = up.fleet.commit("outpost.toml", "# second\n")?;
    up.push()?;
    assert_eq!(up.fleet.outpost(&["sync"])?.code, 0);
    assert_eq!(up.fleet.trusted()?.as_deref(), Some(second.as_str()));
    let before = up.fleet.objects_snapshot()?;

    up.fleet.git_run(&["reset", "-q", "--hard", &up.first])?;
    let rewritten = up.fleet.commit("outpost.toml", "# rewritten\n")?;
    up.push()?;
    let run = up.fleet.outpost(&["sync"])?;
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stdout.contains(&format!(
            "tip commit {rewritten} does not descend from the trusted commit {second} (history was rewritten); set trust.allow_rewind = true to accept it"
        )),
        "{}",
        run.stdout
    );
    assert_eq!(up.fleet.trusted()?.as_deref(), Some(second.as_str()));
    assert_eq!(up.fleet.objects_snapshot()?, before);

    up.configure(&up.daemon.url("fleet.git"), "allow_rewind = true")?;
    let run = up.fleet.outpost(&["sync"])?;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains(&format!(
            "REWIND from {} (trust.allow_rewind)",
            &second[..12]
        )),
        "{}",
        run.stdout
    );
    assert_eq!(up.fleet.trusted()?.as_deref(), Some(rewritten.as_str()));
    up.fsck()
}

#[test]
fn an_unreachable_upstream_is_a_recorded_failure_that_changes_nothing() -> Result {
    let up = Upstream::new()?;
    assert_eq!(up.fleet.outpost(&["sync"])?.code, 0);
    let before = up.fleet.objects_snapshot()?;
    let closed = free_port()?;
    let url = format!("git://127.0.0.1:{closed}/fleet.git");
    up.configure(&url, "")?;
    let run = up.fleet.outpost(&["sync"])?;
    assert_eq!(run.code, 1);
    assert!(
        run.stdout.starts_with(&format!(
            "failed {url}: cannot connect to 127.0.0.1:{closed}: Connection refused"
        )),
        "{}",
        run.stdout
    );
    assert_eq!(up.fleet.trusted()?.as_deref(), Some(up.first.as_str()));
    assert_eq!(up.fleet.objects_snapshot()?, before);
    let status = up.fleet.status()?;
    assert_eq!(status["sync"]["last_error"]["outcome"], "failed");
    assert_eq!(status["sync"]["last_success"]["outcome"], "accepted");
    let human = up.fleet.outpost(&["status"])?.stdout;
    assert!(
        human.contains(&format!("upstream  {url}\n          last success ")),
        "{human}"
    );
    assert!(
        human.contains(" failed, tip -, 0 bytes: cannot connect to 127.0.0.1:"),
        "{human}"
    );
    Ok(())
}

#[test]
fn a_connection_cut_mid_pack_is_a_failure_and_the_next_sync_succeeds() -> Result {
    let up = Upstream::new()?;
    let proxy = CutProxy::start(up.daemon.port, 16 << 10)?;
    let url = format!("git://127.0.0.1:{}/fleet.git", proxy.port);
    up.configure(&url, "")?;
    let run = up.fleet.outpost(&["sync"])?;
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stdout.starts_with(&format!("failed {url}: ")),
        "{}",
        run.stdout
    );
    assert_eq!(up.fleet.trusted()?, None);
    let error = &up.fleet.status()?["sync"]["last_error"];
    assert_eq!(error["outcome"], "failed");
    // What arrived before the cut is counted: part of the pack, no more than was let through.
    let bytes = error["bytes"].as_u64().ok_or("bytes")?;
    assert!(bytes > 1000 && bytes <= 16 << 10, "{error}");
    up.fsck()?;
    let packs = std::fs::read_dir(up.fleet.state().join("objects/objects/pack"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(packs, 0, "a cut fetch left files in the object store");

    proxy.cut_after.store(u64::MAX, Ordering::Relaxed);
    let run = up.fleet.outpost(&["sync"])?;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(up.fleet.trusted()?.as_deref(), Some(up.first.as_str()));
    up.fsck()
}

#[test]
fn an_upstream_that_never_answers_times_out() -> Result {
    let fleet = Fleet::new()?;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    // Accepts the connection and says nothing until the test ends.
    let silent = std::thread::spawn(move || listener.accept().map(|(s, _)| s));
    let url = format!("git://127.0.0.1:{port}/fleet.git");
    fleet.write_config(&format!(
        "\n[source]\nurl = \"{url}\"\nfetch_timeout = \"1s\"\n"
    ))?;
    let started = Instant::now();
    let run = fleet.outpost(&["sync"])?;
    assert_eq!(run.code, 1);
    assert!(
        run.stdout.starts_with(&format!(
            "failed {url}: no complete answer within source.fetch_timeout (1s)"
        )),
        "{}",
        run.stdout
    );
    assert!(started.elapsed() < Duration::from_secs(8));
    drop(silent.join());
    Ok(())
}

/// A sync with `limit` (a `[source]` line) set low is refused with `message`, trusts
/// nothing, and is recorded as refused.
fn refused_by_a_limit(limit: &str, message: &str) -> Result<Upstream> {
    let up = Upstream::new()?;
    up.fleet.write_config(&format!(
        "\n[source]\nurl = \"{}\"\n{limit}\n",
        up.daemon.url("fleet.git")
    ))?;
    let run = up.fleet.outpost(&["sync"])?;
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(run.stdout.contains(message), "{}", run.stdout);
    assert_eq!(up.fleet.trusted()?, None);
    assert_eq!(
        up.fleet.status()?["sync"]["last_error"]["outcome"],
        "refused"
    );
    Ok(up)
}

#[test]
fn a_pack_over_max_fetch_size_is_refused_naming_the_setting() -> Result {
    let up = refused_by_a_limit(
        "max_fetch_size = \"64KiB\"",
        "the upstream sent more than source.max_fetch_size (65536 bytes); raise the limit",
    )?;
    let packs = std::fs::read_dir(up.fleet.state().join("objects/objects/pack"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(packs, 0);
    Ok(())
}

#[test]
fn an_object_over_max_object_size_is_refused_naming_the_setting() -> Result {
    refused_by_a_limit(
        "max_object_size = \"64KiB\"",
        "the upstream sent an object larger than source.max_object_size (65536 bytes) once inflated",
    )
    .map(drop)
}

#[test]
fn a_file_url_syncs_like_git() -> Result {
    let up = Upstream::new()?;
    let url = format!("file://{}", up.bare().display());
    up.configure(&url, "")?;
    let run = up.fleet.outpost(&["sync"])?;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.starts_with(&format!("accepted {url}: ")),
        "{}",
        run.stdout
    );
    let second = up.fleet.commit("outpost.toml", "# second\n")?;
    up.push()?;
    let (run, json) = up.sync()?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(json["commit"], second);
    assert!(json["bytes"].as_u64().is_some_and(|b| b < 20_000), "{json}");
    up.fsck()
}

#[test]
fn an_upstream_without_the_tracked_branch_is_a_recorded_failure() -> Result {
    let up = Upstream::new()?;
    let url = up.daemon.url("fleet.git");
    up.fleet.write_config(&format!(
        "\n[source]\nurl = \"{url}\"\nbranch = \"stable\"\n"
    ))?;
    let run = up.fleet.outpost(&["sync"])?;
    assert_eq!(run.code, 1);
    assert!(
        run.stdout.starts_with(&format!(
            "failed {url}: the upstream has no refs/heads/stable; check source.branch and source.url"
        )),
        "{}",
        run.stdout
    );
    assert_eq!(up.fleet.trusted()?, None);
    Ok(())
}

#[test]
fn a_file_url_to_no_repository_is_a_recorded_failure() -> Result {
    let fleet = Fleet::new()?;
    let url = format!("file://{}", fleet.path("nowhere.git").display());
    fleet.write_config(&format!("\n[source]\nurl = \"{url}\"\n"))?;
    let run = fleet.outpost(&["sync"])?;
    assert_eq!(run.code, 1);
    assert!(
        run.stdout.starts_with(&format!("failed {url}: ")),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("nowhere.git"), "{}", run.stdout);
    Ok(())
}

#[test]
fn an_unknown_url_scheme_is_a_config_error() -> Result {
    let fleet = Fleet::new()?;
    fleet.write_config("\n[source]\nurl = \"ftp://example.com/fleet.git\"\n")?;
    let run = fleet.outpost(&["sync"])?;
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains(
            "source.url: \"ftp://example.com/fleet.git\" uses ftp://, which outpost does not fetch; use git://"
        ),
        "{}",
        run.stderr
    );
    assert!(!fleet.state().exists());
    Ok(())
}

#[test]
fn an_https_url_with_a_private_ca_in_ca_file_syncs() -> Result {
    let up = Upstream::new()?;
    let certs = up.fleet.path("tls");
    test_ca(&certs)?;
    let server = HttpBackend::start_tls(&up.fleet.path("served"), &certs)?;
    let url = format!("https://127.0.0.1:{}/fleet.git", server.port);
    up.fleet.write_config(&format!(
        "\n[source]\nurl = \"{url}\"\nca_file = \"tls/ca.pem\"\n"
    ))?;
    let run = up.fleet.outpost(&["sync"])?;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .starts_with(&format!("accepted {url}: {} ", &up.first[..12])),
        "{}",
        run.stdout
    );
    up.fsck()
}

#[test]
fn an_https_upstream_with_an_unknown_ca_is_a_recorded_failure() -> Result {
    let up = Upstream::new()?;
    let certs = up.fleet.path("tls");
    test_ca(&certs)?;
    // Another CA: the server's certificate does not chain to it.
    test_ca(&up.fleet.path("other"))?;
    let server = HttpBackend::start_tls(&up.fleet.path("served"), &certs)?;
    let url = format!("https://127.0.0.1:{}/fleet.git", server.port);
    up.fleet.write_config(&format!(
        "\n[source]\nurl = \"{url}\"\nca_file = \"other/ca.pem\"\n"
    ))?;
    let run = up.fleet.outpost(&["sync"])?;
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stdout.starts_with(&format!("failed {url}: "))
            && run.stdout.contains("invalid peer certificate"),
        "{}",
        run.stdout
    );
    assert_eq!(up.fleet.trusted()?, None);

    // Without source.ca_file, the system's roots: they do not know the test CA either.
    up.configure(&url, "")?;
    let run = up.fleet.outpost(&["sync"])?;
    assert_eq!(run.code, 1);
    let system = std::path::Path::new("/etc/ssl/certs/ca-certificates.crt").exists();
    let expected = if system {
        "invalid peer certificate: UnknownIssuer"
    } else {
        "install ca-certificates or set source.ca_file"
    };
    assert!(run.stdout.contains(expected), "{}", run.stdout);

    up.fleet.write_config(&format!(
        "\n[source]\nurl = \"{url}\"\nca_file = \"no-such.pem\"\n"
    ))?;
    let run = up.fleet.outpost(&["sync"])?;
    assert_eq!(run.code, 1);
    assert!(
        run.stdout.contains("cannot read source.ca_file ") && run.stdout.contains("no-such.pem"),
        "{}",
        run.stdout
    );
    Ok(())
}

#[test]
fn sync_without_a_url_is_a_usage_error() -> Result {
    let fleet = Fleet::new()?;
    let run = fleet.outpost(&["sync"])?;
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("source.url is not set"),
        "{}",
        run.stderr
    );
    let human = fleet.outpost(&["status"])?.stdout;
    assert!(
        human.contains("upstream  none; bundle-only (set source.url to sync)"),
        "{human}"
    );
    Ok(())
}

/// A small HTTP/1.1 server in front of `git http-backend` (CGI) serving the repositories under
/// `base`: one request a connection, bodies by Content-Length. Stops accepting when dropped.
struct HttpBackend {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HttpBackend {
    fn start(base: &Path) -> Result<Self> {
        Self::serve(base, None)
    }

    /// The same over TLS, with the certificate and key in `server.pem` and `server.key`.
    fn start_tls(base: &Path, certs: &Path) -> Result<Self> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let chain = CertificateDer::pem_file_iter(certs.join("server.pem"))?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_file(certs.join("server.key"))?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
        Self::serve(base, Some(Arc::new(config)))
    }

    fn serve(base: &Path, tls: Option<Arc<rustls::ServerConfig>>) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (stop, base) = (stop.clone(), base.to_owned());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let (base, tls) = (base.clone(), tls.clone());
                            std::thread::spawn(move || {
                                let _ = stream.set_nonblocking(false);
                                let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
                                let _ = match tls {
                                    None => serve_cgi(stream, &base),
                                    Some(config) => rustls::ServerConnection::new(config)
                                        .map_err(Into::into)
                                        .and_then(|conn| {
                                            serve_cgi(rustls::StreamOwned::new(conn, stream), &base)
                                        }),
                                };
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        Ok(HttpBackend {
            port,
            stop,
            thread: Some(thread),
        })
    }

    fn url(&self, repo: &str) -> String {
        format!("http://127.0.0.1:{}/{repo}", self.port)
    }
}

impl Drop for HttpBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_cgi<S: Read + Write>(mut stream: S, base: &Path) -> Result {
    use std::io::BufRead;
    let mut reader = std::io::BufReader::new(&mut stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, target) = (
        parts.next().ok_or("no method")?.to_owned(),
        parts.next().ok_or("no target")?.to_owned(),
    );
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((name, value)) = h.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let length: usize = header("content-length").map_or(Ok(0), |v| v.parse())?;
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    drop(reader);
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut cgi = Command::new("git");
    cgi.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", base)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("REQUEST_METHOD", &method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("CONTENT_LENGTH", length.to_string())
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(t) = header("content-type") {
        cgi.env("CONTENT_TYPE", t);
    }
    if let Some(p) = header("git-protocol") {
        cgi.env("GIT_PROTOCOL", p);
    }
    let mut child = cgi.spawn()?;
    let mut stdin = child.stdin.take().ok_or("stdin")?;
    let feeder = std::thread::spawn(move || stdin.write_all(&body));
    let out = child.wait_with_output()?;
    let _ = feeder.join();
    let split = out
        .stdout
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| {
            out.stdout
                .windows(2)
                .position(|w| w == b"\n\n")
                .map(|i| (i, 2))
        })
        .ok_or("no CGI header")?;
    let head = String::from_utf8_lossy(&out.stdout[..split.0]).into_owned();
    let payload = &out.stdout[split.0 + split.1..];
    let mut status = "200 OK".to_owned();
    let mut response = String::new();
    for h in head.lines() {
        match h.split_once(':') {
            Some((name, value)) if name.eq_ignore_ascii_case("status") => {
                status = value.trim().to_owned();
            }
            Some(_) => response.push_str(&format!("{h}\r\n")),
            None => {}
        }
    }
    stream.write_all(
        format!(
            "HTTP/1.1 {status}\r\n{response}Content-Length: {}\r\nConnection: close\r\n\r\n",
            payload.len()
        )
        .as_bytes(),
    )?;
    stream.write_all(payload)?;
    stream.flush()?;
    Ok(())
}

/// A test CA (`ca.pem`) and a certificate for 127.0.0.1 it signed (`server.pem`, `server.key`)
/// in `dir`, made with openssl.
fn test_ca(dir: &Path) -> Result {
    std::fs::create_dir_all(dir)?;
    let openssl = |args: &[&str]| -> Result {
        run(Command::new("openssl").current_dir(dir).args(args))?;
        Ok(())
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &["-keyout", "ca.key", "-out", "ca.pem", "-days", "30"],
            &["-subj", "/CN=outpost test CA"],
            &["-addext", "basicConstraints=critical,CA:TRUE"],
            &["-addext", "keyUsage=critical,keyCertSign"],
        ]
        .concat(),
    )?;
    openssl(
        &[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        ]
        .concat(),
    )?;
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "30",
        "-extfile",
        "server.ext",
    ])
}

#[test]
fn an_http_url_syncs_through_git_http_backend() -> Result {
    let up = Upstream::new()?;
    let server = HttpBackend::start(&up.fleet.path("served"))?;
    let url = server.url("fleet.git");
    up.configure(&url, "")?;
    let run = up.fleet.outpost(&["sync"])?;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .starts_with(&format!("accepted {url}: {} ", &up.first[..12])),
        "{}",
        run.stdout
    );
    let second = up.fleet.commit("outpost.toml", "# second\n")?;
    up.push()?;
    let (run, json) = up.sync()?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(json["outcome"], "accepted");
    assert_eq!(json["commit"], second);
    assert!(json["bytes"].as_u64().is_some_and(|b| b < 20_000), "{json}");
    let (run, json) = up.sync()?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(json["outcome"], "up-to-date");
    up.fsck()
}

#[test]
fn an_http_upstream_without_the_repository_is_a_recorded_failure() -> Result {
    let up = Upstream::new()?;
    let server = HttpBackend::start(&up.fleet.path("served"))?;
    let url = server.url("elsewhere.git");
    up.configure(&url, "")?;
    let run = up.fleet.outpost(&["sync"])?;
    assert_eq!(run.code, 1);
    assert!(
        run.stdout.starts_with(&format!("failed {url}: ")) && run.stdout.contains("HTTP 404"),
        "{}",
        run.stdout
    );
    assert_eq!(
        up.fleet.status()?["sync"]["last_error"]["outcome"],
        "failed"
    );
    Ok(())
}

#[test]
fn an_http_pack_over_max_fetch_size_is_refused() -> Result {
    let up = Upstream::new()?;
    let server = HttpBackend::start(&up.fleet.path("served"))?;
    up.fleet.write_config(&format!(
        "\n[source]\nurl = \"{}\"\nmax_fetch_size = \"64KiB\"\n",
        server.url("fleet.git")
    ))?;
    let run = up.fleet.outpost(&["sync"])?;
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stdout
            .contains("the upstream sent more than source.max_fetch_size (65536 bytes)"),
        "{}",
        run.stdout
    );
    assert_eq!(up.fleet.trusted()?, None);
    Ok(())
}

#[test]
fn import_works_while_a_sync_waits_on_a_silent_upstream() -> Result {
    let fleet = Fleet::new()?;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let silent = std::thread::spawn(move || listener.accept().map(|(s, _)| s));
    fleet.write_config(&format!(
        "\n[source]\nurl = \"git://127.0.0.1:{port}/fleet.git\"\nfetch_timeout = \"6s\"\n"
    ))?;
    // A first command creates the state dir, so that the sync below starts at once.
    assert_eq!(fleet.outpost(&["status"])?.code, 0);
    let sync = fleet.command(&["sync"]).stdout(Stdio::piped()).spawn()?;
    let held = silent.join().map_err(|_| "listener")??;
    // The sync is connected and waiting: the state lock must be free for an import.
    let tip = fleet.commit("outpost.toml", "# bundled\n")?;
    let bundle = fleet.bundle("site.bundle", &["main"])?;
    let started = Instant::now();
    let run = fleet.outpost_paths("import", &[&bundle])?;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(fleet.trusted()?.as_deref(), Some(tip.as_str()));
    let out = sync.wait_with_output()?;
    drop(held);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("no complete answer within source.fetch_timeout (6s)"),
        "{stdout}"
    );
    assert_eq!(fleet.trusted()?.as_deref(), Some(tip.as_str()));
    Ok(())
}
