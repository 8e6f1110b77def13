//! Smart HTTP for upstream sync: gix's HTTP transport over a ureq client that outpost bounds.
//!
//! gix hands a request's body to the client as a writer and reads the response through two
//! readers, headers first. Here a request is an [`Exchange`] sent at the first read of either
//! reader, once gix wrote its body. Each request may take what is left of
//! `source.fetch_timeout` (ureq's end-to-end timeout, body included); connecting may take
//! `source.connect_timeout`; the response body passes through the fetch's meter, which caps
//! it at `source.max_fetch_size`. Redirects are not followed (the error names the status), and
//! credentials in an `http://` URL are never sent (gix refuses clear text).
//!
//! `https://` is rustls with the ring provider. The roots are the certificates of
//! `source.ca_file` alone when it is set (a private CA), else the system's bundle
//! ([`SYSTEM_ROOTS`]): no root list is built into the binary, so the host's own CA updates
//! apply.

use std::io::{BufRead, Cursor, Read, Write};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use gix::protocol::transport::client::blocking_io::http::{
    GetResponse, Http, PostBodyDataKind, PostResponse,
};

use super::{Limits, Meter, Metered};

/// The system's root certificates (Debian's ca-certificates), used without `source.ca_file`.
pub const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The HTTP client of one fetch.
pub struct Client {
    agent: ureq::Agent,
    meter: Arc<Meter>,
    deadline: Instant,
}

impl Client {
    /// A client for one fetch; for `https`, reads the root certificates (`ca_file`, or the
    /// system's).
    pub fn new(
        limits: &Limits,
        https: bool,
        ca_file: Option<&Path>,
        meter: Arc<Meter>,
        deadline: Instant,
    ) -> Result<Self, String> {
        let roots = match (https, ca_file) {
            (false, _) => Vec::new(),
            (true, Some(path)) => read_roots(path, "source.ca_file ")?,
            (true, None) => read_roots(Path::new(SYSTEM_ROOTS), "")
                .map_err(|e| format!("{e}; install ca-certificates or set source.ca_file"))?,
        };
        let tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::Rustls)
            .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .root_certs(ureq::tls::RootCerts::new_with_certs(&roots))
            .build();
        let config = ureq::Agent::config_builder()
            .timeout_connect(Some(limits.connect_timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(concat!("outpost/", env!("CARGO_PKG_VERSION")))
            .tls_config(tls)
            .build();
        Ok(Self {
            agent: config.into(),
            meter,
            deadline,
        })
    }

    fn exchange(
        &self,
        url: &str,
        headers: impl IntoIterator<Item = impl AsRef<str>>,
        post: Option<Arc<Mutex<Vec<u8>>>>,
    ) -> Arc<Mutex<Exchange>> {
        let headers = headers
            .into_iter()
            .filter_map(|h| {
                let (name, value) = h.as_ref().split_once(':')?;
                Some((name.trim().to_owned(), value.trim().to_owned()))
            })
            .collect();
        Arc::new(Mutex::new(Exchange {
            request: Some(Request {
                agent: self.agent.clone(),
                url: url.to_owned(),
                headers,
                post,
                deadline: self.deadline,
                meter: self.meter.clone(),
            }),
            headers: None,
            body: None,
        }))
    }
}

/// The PEM certificates of `path`; `what` names the setting in errors.
fn read_roots(path: &Path, what: &str) -> Result<Vec<ureq::tls::Certificate<'static>>, String> {
    let pem =
        std::fs::read(path).map_err(|e| format!("cannot read {what}{}: {e}", path.display()))?;
    let certs: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(cert)) => Some(cert),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(format!("{what}{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

/// A request not sent yet.
struct Request {
    agent: ureq::Agent,
    url: String,
    headers: Vec<(String, String)>,
    /// The body gix writes, for a POST.
    post: Option<Arc<Mutex<Vec<u8>>>>,
    deadline: Instant,
    meter: Arc<Meter>,
}

/// One request and, once sent, its response.
pub struct Exchange {
    request: Option<Request>,
    headers: Option<Vec<u8>>,
    body: Option<Box<dyn Read + Send>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Exchange {
    /// Sends the request if that was not done yet.
    fn send(&mut self) -> std::io::Result<()> {
        let Some(r) = self.request.take() else {
            return Ok(());
        };
        let left = r.deadline.saturating_duration_since(Instant::now());
        let timed_out = || {
            r.meter.timed_out.store(true, Ordering::Relaxed);
            std::io::Error::new(std::io::ErrorKind::TimedOut, "source.fetch_timeout passed")
        };
        if left.is_zero() {
            return Err(timed_out());
        }
        let sent = match &r.post {
            None => {
                let mut req = r.agent.get(&r.url);
                for (name, value) in &r.headers {
                    req = req.header(name, value);
                }
                req.config().timeout_global(Some(left)).build().call()
            }
            Some(body) => {
                let mut req = r.agent.post(&r.url);
                for (name, value) in &r.headers {
                    req = req.header(name, value);
                }
                let data = std::mem::take(&mut *lock(body));
                req.config()
                    .timeout_global(Some(left))
                    .build()
                    .send(&data[..])
            }
        };
        let response = match sent {
            Ok(response) => response,
            Err(ureq::Error::Timeout(_)) => return Err(timed_out()),
            Err(ureq::Error::Io(e)) => return Err(e),
            Err(e) => return Err(std::io::Error::other(e.to_string())),
        };
        let status = response.status();
        if !status.is_success() {
            return Err(std::io::Error::other(format!(
                "{} answered HTTP {status}",
                r.url
            )));
        }
        let mut text = Vec::new();
        for (name, value) in response.headers() {
            text.extend_from_slice(name.as_str().as_bytes());
            text.extend_from_slice(b": ");
            text.extend_from_slice(value.as_bytes());
            text.push(b'\n');
        }
        self.headers = Some(text);
        self.body = Some(Box::new(Metered {
            inner: response.into_body().into_reader(),
            meter: r.meter.clone(),
        }));
        Ok(())
    }
}

/// The response headers, one `Name: value` a line, read after the request was sent.
pub struct Headers {
    exchange: Arc<Mutex<Exchange>>,
    text: Option<Cursor<Vec<u8>>>,
}

impl Headers {
    fn text(&mut self) -> std::io::Result<&mut Cursor<Vec<u8>>> {
        if self.text.is_none() {
            let mut exchange = lock(&self.exchange);
            exchange.send()?;
            let text = exchange.headers.take().unwrap_or_default();
            self.text = Some(Cursor::new(text));
        }
        Ok(self.text.get_or_insert_with(Default::default))
    }
}

impl Read for Headers {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.text()?.read(buf)
    }
}

impl BufRead for Headers {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.text()?.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        if let Some(text) = self.text.as_mut() {
            text.consume(amt);
        }
    }
}

/// The response body, read after the request was sent.
pub struct Body {
    exchange: Arc<Mutex<Exchange>>,
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut exchange = lock(&self.exchange);
        exchange.send()?;
        match exchange.body.as_mut() {
            Some(body) => body.read(buf),
            None => Ok(0),
        }
    }
}

/// The body of a POST, as gix writes it.
pub struct PostBody(Arc<Mutex<Vec<u8>>>);

impl Write for PostBody {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        lock(&self.0).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Http for Client {
    type Headers = Headers;
    type ResponseBody = std::io::BufReader<Body>;
    type PostBody = PostBody;

    fn get(
        &mut self,
        url: &str,
        _base_url: &str,
        headers: impl IntoIterator<Item = impl AsRef<str>>,
    ) -> gix::Result<GetResponse<Self::Headers, Self::ResponseBody>> {
        let exchange = self.exchange(url, headers, None);
        Ok(GetResponse {
            headers: Headers {
                exchange: exchange.clone(),
                text: None,
            },
            body: std::io::BufReader::new(Body { exchange }),
        })
    }

    fn post(
        &mut self,
        url: &str,
        _base_url: &str,
        headers: impl IntoIterator<Item = impl AsRef<str>>,
        _body: PostBodyDataKind,
    ) -> gix::Result<PostResponse<Self::Headers, Self::ResponseBody, Self::PostBody>> {
        let post = Arc::new(Mutex::new(Vec::new()));
        let exchange = self.exchange(url, headers, Some(post.clone()));
        Ok(PostResponse {
            post_body: PostBody(post),
            headers: Headers {
                exchange: exchange.clone(),
                text: None,
            },
            body: std::io::BufReader::new(Body { exchange }),
        })
    }

    fn configure(&mut self, _config: &dyn std::any::Any) -> gix::Result {
        Ok(())
    }
}
