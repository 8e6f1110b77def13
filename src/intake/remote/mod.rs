//! The network side of upstream sync: gix's fetch of the tracked branch into a quarantine, over
//! a connection outpost opens itself so that it can bound it.
//!
//! `git://` is a TCP connection opened with `source.connect_timeout`; `file://` is a
//! `git upload-pack` outpost spawns (git must be installed). Both speak the git protocol (v2) to
//! gix. `http://` and `https://` are git's smart HTTP through `http`, a ureq client (rustls).
//!
//! Every byte the upstream sends passes through a meter, which stops the fetch once more than
//! `source.max_fetch_size` arrived; a watchdog closes the connection (or kills the process) at
//! `source.fetch_timeout`, so a stalled upstream cannot hang a sync. Only the tracked branch is
//! asked for, without tags; what the host already has is negotiated from the object store's
//! refs (the quarantine's alternates), so fetches are incremental.

use std::io::Read;
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use gix::ObjectId;
use gix::protocol::transport::Protocol;
use gix::protocol::transport::client::git::ConnectMode;
use gix::protocol::transport::client::git::blocking_io::Connection;
use gix::remote::Direction;

use crate::repo::Quarantine;

mod http;

/// The URL schemes `source.url` may use.
pub const SCHEMES: &[&str] = &["git", "http", "https", "file"];

/// Largest part of a spawned `git upload-pack`'s stderr kept for the error message.
const MAX_STDERR: usize = 4 << 10;

/// Checks that `url` is a URL outpost can fetch from.
pub fn check_url(url: &str) -> Result<gix::Url, String> {
    let supported = || {
        SCHEMES
            .iter()
            .map(|s| format!("{s}://"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !url.contains("://") {
        return Err(format!(
            "{url:?} is not a URL; write it with a scheme ({})",
            supported()
        ));
    }
    let parsed = gix::url::parse(gix::bstr::BStr::new(url)).map_err(|e| format!("{url:?}: {e}"))?;
    let scheme = parsed.scheme.as_str();
    if !SCHEMES.contains(&scheme) {
        return Err(format!(
            "{url:?} uses {scheme}://, which outpost does not fetch; use {}",
            supported()
        ));
    }
    match parsed.scheme {
        gix::url::Scheme::File if parsed.host().is_some() => {
            return Err(format!(
                "{url:?} names a host; a file:// URL is a local path, written file:///PATH"
            ));
        }
        gix::url::Scheme::File => {}
        _ if parsed.host().is_none() => return Err(format!("{url:?} names no host")),
        _ if parsed.user().is_some() || parsed.password().is_some() => {
            // Not echoed: the URL holds a secret.
            return Err(
                "the URL holds credentials (user:password@), which outpost does not keep in its config; serve the repository to the hosts without authentication"
                    .to_owned(),
            );
        }
        _ => {}
    }
    Ok(parsed)
}

/// The bounds of one fetch.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub connect_timeout: Duration,
    pub fetch_timeout: Duration,
    /// `source.max_fetch_size`, bytes.
    pub max_bytes: u64,
    /// `source.max_object_size`, bytes.
    pub max_object: usize,
}

/// Where a fetch may go and how long it may take.
#[derive(Debug, Clone)]
pub struct Upstream<'a> {
    pub url: &'a gix::Url,
    pub tracked_ref: &'a str,
    pub limits: Limits,
    /// `source.ca_file`: the roots for `https://`; `None`, the system's bundle.
    pub ca_file: Option<&'a std::path::Path>,
}

/// Why a fetch did not finish.
#[derive(Debug)]
pub enum FetchError {
    /// The upstream sent more than `source.max_fetch_size`.
    TooBig { max: u64 },
    /// The pack holds an object that inflates past `source.max_object_size`.
    ObjectTooBig { max: usize },
    /// `source.fetch_timeout` passed.
    TimedOut { after: Duration },
    /// Anything else: the network, the upstream, the protocol.
    Failed(String),
}

/// A fetch that did not finish, and how much the upstream had sent until then.
#[derive(Debug)]
pub struct Unfinished {
    pub error: FetchError,
    pub bytes: u64,
}

/// What a finished fetch brought.
#[derive(Debug)]
pub struct Fetched {
    /// Where the upstream's tracked branch points.
    pub tip: ObjectId,
    /// Bytes received from the upstream.
    pub bytes: u64,
    /// Whether a pack arrived (none when the host had every object already).
    pub pack: bool,
}

/// Bytes received, shared by the connection's reader, the watchdog and the caller.
#[derive(Debug)]
struct Meter {
    bytes: AtomicU64,
    max: u64,
    over: AtomicBool,
    timed_out: AtomicBool,
    /// The indexer met an object past `source.max_object_size`.
    object_too_big: AtomicBool,
    interrupt: AtomicBool,
}

/// The upstream's side of the connection, counted and capped.
struct Metered<R> {
    inner: R,
    meter: Arc<Meter>,
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.meter.over.load(Ordering::Relaxed) {
            return Err(std::io::Error::other("source.max_fetch_size exceeded"));
        }
        let n = self.inner.read(buf)?;
        let total = self.meter.bytes.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        if total > self.meter.max {
            self.meter.over.store(true, Ordering::Relaxed);
            self.meter.interrupt.store(true, Ordering::Relaxed);
            return Err(std::io::Error::other("source.max_fetch_size exceeded"));
        }
        Ok(n)
    }
}

/// What the watchdog closes when time is up.
enum Closer {
    Tcp(TcpStream),
    Process(Arc<Mutex<Child>>),
    /// The HTTP client bounds each request itself; the watchdog only interrupts gix.
    Nothing,
}

impl Closer {
    fn close(&self) {
        match self {
            Closer::Tcp(stream) => {
                let _ = stream.shutdown(Shutdown::Both);
            }
            Closer::Process(child) => {
                let _ = child
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .kill();
            }
            Closer::Nothing => {}
        }
    }
}

/// Closes the connection at the deadline unless dropped first.
struct Watchdog {
    done: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    fn start(deadline: Instant, closer: Closer, meter: Arc<Meter>) -> Self {
        let (done, wait) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let left = deadline.saturating_duration_since(Instant::now());
            if let Err(mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(left) {
                meter.timed_out.store(true, Ordering::Relaxed);
                meter.interrupt.store(true, Ordering::Relaxed);
                closer.close();
            }
        });
        Self {
            done: Some(done),
            thread: Some(thread),
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.done.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A spawned `git upload-pack`, killed and reaped when dropped.
struct Process {
    child: Arc<Mutex<Child>>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Process {
    /// What the process said on stderr, once it ended.
    fn finish(mut self) -> String {
        self.reap();
        self.stderr
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }

    fn reap(&mut self) {
        let mut child = self
            .child
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.reap();
    }
}

/// Fetches the tracked branch from the upstream into `quarantine`.
pub fn fetch(quarantine: &mut Quarantine, upstream: &Upstream<'_>) -> Result<Fetched, Unfinished> {
    let started = Instant::now();
    let limits = upstream.limits;
    let meter = Arc::new(Meter {
        bytes: AtomicU64::new(0),
        max: limits.max_bytes,
        over: AtomicBool::new(false),
        timed_out: AtomicBool::new(false),
        object_too_big: AtomicBool::new(false),
        interrupt: AtomicBool::new(false),
    });
    let job = Job {
        quarantine,
        upstream,
        meter: &meter,
        deadline: started + limits.fetch_timeout,
    };
    let received = match &upstream.url.scheme {
        gix::url::Scheme::Git => job.over_tcp(),
        gix::url::Scheme::File => job.over_process(),
        gix::url::Scheme::Http | gix::url::Scheme::Https => job.over_http(),
        other => Err(FetchError::Failed(format!(
            "{} is not a supported scheme",
            other.as_str()
        ))),
    }
    .and_then(|received| {
        quarantine
            .reopen()
            .map_err(|e| FetchError::Failed(e.to_string()))?;
        Ok(received)
    });
    let bytes = meter.bytes.load(Ordering::Relaxed);
    let (tip, pack) = received.map_err(|error| Unfinished { error, bytes })?;
    tracing::debug!(elapsed = ?started.elapsed(), bytes, "fetched");
    Ok(Fetched { tip, bytes, pack })
}

/// One fetch on its way.
struct Job<'a> {
    quarantine: &'a Quarantine,
    upstream: &'a Upstream<'a>,
    meter: &'a Arc<Meter>,
    deadline: Instant,
}

impl Job<'_> {
    /// `git://`: a TCP connection to a git daemon.
    fn over_tcp(&self) -> Result<(ObjectId, bool), FetchError> {
        let url = self.upstream.url;
        let stream =
            connect_tcp(url, self.upstream.limits.connect_timeout).map_err(FetchError::Failed)?;
        let clone = || {
            stream
                .try_clone()
                .map_err(|e| FetchError::Failed(format!("cannot use the connection: {e}")))
        };
        let (closer, writer) = (clone()?, clone()?);
        let _watchdog = Watchdog::start(self.deadline, Closer::Tcp(closer), self.meter.clone());
        let host = url.host().unwrap_or_default().to_owned();
        let connection = Connection::new(
            self.metered(stream),
            writer,
            Protocol::V2,
            url.path.clone(),
            Some((host, url.port)),
            ConnectMode::Daemon,
            false,
        )
        .custom_url(Some(url.to_bstring()));
        self.receive(connection).map_err(|e| self.failed(&e, ""))
    }

    /// `file://`: a `git upload-pack` this process spawns.
    fn over_process(&self) -> Result<(ObjectId, bool), FetchError> {
        let url = self.upstream.url;
        let (process, stdout, stdin) = spawn_upload_pack(url).map_err(FetchError::Failed)?;
        let closer = Closer::Process(process.child.clone());
        let _watchdog = Watchdog::start(self.deadline, closer, self.meter.clone());
        let connection = Connection::new(
            self.metered(stdout),
            stdin,
            Protocol::V2,
            url.path.clone(),
            None::<(String, Option<u16>)>,
            ConnectMode::Process,
            false,
        )
        .custom_url(Some(url.to_bstring()));
        self.receive(connection)
            .map_err(|e| self.failed(&e, &process.finish()))
    }

    /// `http://` and `https://`: git's smart HTTP.
    fn over_http(&self) -> Result<(ObjectId, bool), FetchError> {
        let url = self.upstream.url;
        let _watchdog = Watchdog::start(self.deadline, Closer::Nothing, self.meter.clone());
        let https = url.scheme == gix::url::Scheme::Https;
        let client = http::Client::new(
            &self.upstream.limits,
            https,
            self.upstream.ca_file,
            self.meter.clone(),
            self.deadline,
        )
        .map_err(FetchError::Failed)?;
        let transport = gix_transport::client::blocking_io::http::connect_http(
            client,
            url.clone(),
            Protocol::V2,
            false,
        );
        self.receive(transport).map_err(|e| self.failed(&e, ""))
    }

    fn metered<R: Read>(&self, inner: R) -> std::io::BufReader<Metered<R>> {
        std::io::BufReader::new(Metered {
            inner,
            meter: self.meter.clone(),
        })
    }

    fn receive<T>(&self, transport: T) -> Result<(ObjectId, bool), String>
    where
        T: gix::protocol::transport::client::blocking_io::Transport,
    {
        receive(
            self.quarantine,
            transport,
            self.upstream.url,
            self.upstream.tracked_ref,
            self.meter,
            self.upstream.limits,
        )
    }

    /// Why the fetch stopped: the size cap or the deadline when the meter saw them, else the
    /// error, with what a spawned git said on stderr.
    fn failed(&self, e: &dyn std::fmt::Display, stderr: &str) -> FetchError {
        let limits = self.upstream.limits;
        if self.meter.over.load(Ordering::Relaxed) {
            return FetchError::TooBig {
                max: limits.max_bytes,
            };
        }
        if self.meter.timed_out.load(Ordering::Relaxed) {
            return FetchError::TimedOut {
                after: limits.fetch_timeout,
            };
        }
        if self.meter.object_too_big.load(Ordering::Relaxed) {
            return FetchError::ObjectTooBig {
                max: limits.max_object,
            };
        }
        // git's own words ("fatal: ... does not appear to be a git repository") say more
        // than the broken handshake they cause.
        match stderr.lines().map(str::trim).find(|l| !l.is_empty()) {
            Some(said) => FetchError::Failed(format!("{e}: git upload-pack said {said:?}")),
            None => FetchError::Failed(e.to_string()),
        }
    }
}

/// Runs gix's fetch over `connection`: the tip of the tracked branch, and whether a pack came.
fn receive<T>(
    quarantine: &Quarantine,
    connection: T,
    url: &gix::Url,
    tracked_ref: &str,
    meter: &Meter,
    limits: Limits,
) -> Result<(ObjectId, bool), String>
where
    T: gix::protocol::transport::client::blocking_io::Transport,
{
    let mut repo = quarantine.repo().clone();
    {
        let mut config = repo.config_snapshot_mut();
        config
            .set_value(
                &gix::config::tree::gitoxide::Objects::ALLOC_LIMIT,
                limits.max_object.to_string().as_str(),
            )
            .map_err(|e| e.to_string())?;
    }
    let remote = repo
        .remote_at(url.clone())
        .map_err(|e| e.to_string())?
        .with_fetch_tags(gix::remote::fetch::Tags::None)
        .with_refspecs([tracked_ref], Direction::Fetch)
        .map_err(|e| e.to_string())?;
    let prepared = remote
        .to_connection_with_transport(connection)
        .prepare_fetch(&mut gix::progress::Discard, Default::default())
        .map_err(|e| describe(&e))?;
    if prepared.ref_map().is_missing_required_mapping() {
        return Err(format!(
            "the upstream has no {tracked_ref}; check source.branch and source.url"
        ));
    }
    let outcome = prepared
        .receive(gix::progress::Discard, &meter.interrupt)
        .map_err(|e| {
            let text = format!("{e:?}");
            if text.contains("AllocationLimit") || text.contains("too large to fit in memory") {
                meter.object_too_big.store(true, Ordering::Relaxed);
            }
            describe(&e)
        })?;
    let tip = outcome
        .ref_map
        .mappings
        .iter()
        .find(|m| m.remote.as_name().is_some_and(|n| n == tracked_ref))
        .and_then(|m| m.remote.as_id())
        .map(ToOwned::to_owned)
        .ok_or_else(|| format!("the upstream has no {tracked_ref}"))?;
    let pack = matches!(outcome.status, gix::remote::fetch::Status::Change { .. });
    Ok((tip, pack))
}

/// A gix error as one line: the outermost message and its most specific cause.
fn describe(e: &gix::Error) -> String {
    let outer = e.to_string();
    let cause = e.probable_cause().to_string();
    if cause == outer || outer.contains(&cause) {
        outer
    } else {
        format!("{outer}: {cause}")
    }
}

/// Opens a TCP connection to the git daemon of `url`, trying each address it resolves to.
fn connect_tcp(url: &gix::Url, timeout: Duration) -> Result<TcpStream, String> {
    let host = url.host().unwrap_or_default();
    let port = url.port.unwrap_or(9418);
    let addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?;
    let mut last = format!("{host} resolves to no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                last = format!(
                    "cannot connect to {addr}: no answer within source.connect_timeout ({})",
                    humantime::format_duration(timeout)
                );
            }
            Err(e) => last = format!("cannot connect to {addr}: {e}"),
        }
    }
    Err(last)
}

/// Spawns `git upload-pack` for the repository at a `file://` URL.
fn spawn_upload_pack(
    url: &gix::Url,
) -> Result<(Process, std::process::ChildStdout, std::process::ChildStdin), String> {
    let path = PathBuf::from(url.path.to_string());
    // The URL is the operator's choice: a repository owned by another user is meant.
    let mut safe = std::ffi::OsString::from("safe.directory=");
    safe.push(&path);
    let mut child = Command::new("git")
        .arg("-c")
        .arg(safe)
        .args(["upload-pack", "--strict"])
        .arg(&path)
        .env("GIT_PROTOCOL", "version=2")
        .env_remove("GIT_DIR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run git upload-pack (is git installed?): {e}"))?;
    let (Some(stdout), Some(stdin), Some(mut stderr)) =
        (child.stdout.take(), child.stdin.take(), child.stderr.take())
    else {
        let _ = child.kill();
        let _ = child.wait();
        return Err("cannot talk to git upload-pack".to_owned());
    };
    let stderr = std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buf = [0u8; 1024];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            let room = MAX_STDERR.saturating_sub(kept.len());
            kept.extend_from_slice(&buf[..n.min(room)]);
        }
        String::from_utf8_lossy(&kept).into_owned()
    });
    let process = Process {
        child: Arc::new(Mutex::new(child)),
        stderr: Some(stderr),
    };
    Ok((process, stdout, stdin))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_for_what_outpost_can_fetch() {
        for (url, said) in [
            ("file://srv/fleet.git", "names a host"),
            ("file://localhost/srv/fleet.git", "names a host"),
            (
                "http://user:secret@git.example.com/fleet.git",
                "credentials",
            ),
            ("git://git.example.com:99999/fleet.git", "can not be parsed"),
            ("git://git.example.com", "does not specify a path"),
            (
                "ssh://git@git.example.com/fleet.git",
                "uses ssh://, which outpost does not fetch",
            ),
        ] {
            let err = check_url(url).map(|_| ()).unwrap_err();
            assert!(err.contains(said), "{url}: {err}");
            assert!(!err.contains("secret"), "{err}");
        }
        for url in [
            "file:///srv/fleet.git",
            "git://127.0.0.1:9418/fleet.git",
            "http://git.example.com/fleet.git",
            "https://git.example.com/fleet.git",
        ] {
            assert!(check_url(url).is_ok(), "{url}");
        }
    }

    #[test]
    fn the_meter_stops_past_the_cap() {
        let meter = Arc::new(Meter {
            bytes: AtomicU64::new(0),
            max: 10,
            over: AtomicBool::new(false),
            timed_out: AtomicBool::new(false),
            object_too_big: AtomicBool::new(false),
            interrupt: AtomicBool::new(false),
        });
        let mut r = Metered {
            inner: &[7u8; 32][..],
            meter: meter.clone(),
        };
        let mut buf = [0u8; 8];
        assert_eq!(r.read(&mut buf).ok(), Some(8));
        assert!(r.read(&mut buf).is_err());
        assert!(meter.over.load(Ordering::Relaxed));
        assert!(meter.interrupt.load(Ordering::Relaxed));
    }
}
