//! The canary controller's outgoing HTTP: scraping a proxy's `/stats/prometheus`, asking a
//! Prometheus server an instant query, and POSTing to a webhook. One small client, shared by the
//! Kubernetes and the file shells, every call bounded by a timeout.
//!
//! `http://` and `https://`. HTTPS verifies the server against the public web PKI roots
//! (webpki-roots, so the operator's image needs no CA store) plus, optionally, the CAs of one
//! PEM bundle ([`Fetcher::with_ca_file`], the operator's `--canary-ca-file`) for in-cluster
//! webhooks and Prometheus servers signed by a private CA. The bundle is read once, when the
//! fetcher is made: the operator refuses to start with a bundle it cannot read rather than
//! failing every call later. A server whose certificate does not verify is refused, with the
//! URL and the certificate problem in the error; nothing is ever sent in plaintext instead.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{CertificateDer, pem::PemObject};

/// Timeout of a scrape or a query; a webhook has its own (`timeout`, default [`WEBHOOK_TIMEOUT`]).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// A webhook's timeout when it gives none (Flagger's default).
pub const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest answer read (a busy proxy's exposition is a few hundred KiB).
const MAX_BODY: usize = 16 << 20;

/// Why an HTTP call gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: only http:// and https:// URLs are supported")]
    Scheme { url: String },
    #[error("{url}: not a valid URL: {message}")]
    Url { url: String, message: String },
    #[error("{url}: no answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    /// The TLS handshake failed on the server's certificate (untrusted issuer, wrong name,
    /// expired, ...): `message` is rustls' account of it.
    #[error("{url}: the server's TLS certificate was refused: {message}")]
    Certificate { url: String, message: String },
    #[error("{url}: {message}")]
    Transport { url: String, message: String },
    #[error("{url}: answered {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: the answer is larger than {MAX_BODY} bytes")]
    TooLarge { url: String },
}

/// Why the extra CA bundle cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CaFileError {
    #[error("canary CA file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("canary CA file {path}: not PEM: {message}")]
    Pem { path: PathBuf, message: String },
    #[error("canary CA file {path}: holds no CERTIFICATE block")]
    Empty { path: PathBuf },
    #[error("canary CA file {path}: certificate {index} is not a usable CA: {source}")]
    Certificate {
        path: PathBuf,
        index: usize,
        #[source]
        source: rustls::Error,
    },
}

/// An HTTP and HTTPS client with timeouts.
#[derive(Clone)]
pub struct Fetcher {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Default for Fetcher {
    fn default() -> Self {
        Self::new()
    }
}

impl Fetcher {
    /// A client that trusts the public web PKI roots only.
    pub fn new() -> Self {
        Self::with_roots(web_pki_roots())
    }

    /// A client that trusts the public web PKI roots and every certificate of the PEM bundle
    /// at `path`.
    pub fn with_ca_file(path: &Path) -> Result<Self, CaFileError> {
        let mut roots = web_pki_roots();
        let pem = std::fs::read(path).map_err(|source| CaFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut added = 0;
        for (index, cert) in CertificateDer::pem_slice_iter(&pem).enumerate() {
            let cert = cert.map_err(|e| CaFileError::Pem {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
            roots.add(cert).map_err(|source| CaFileError::Certificate {
                path: path.to_path_buf(),
                index,
                source,
            })?;
            added += 1;
        }
        if added == 0 {
            return Err(CaFileError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(Self::with_roots(roots))
    }

    fn with_roots(roots: RootCertStore) -> Self {
        // The provider is named here rather than taken from the process default, so the
        // client works the same in the operator, the CLI and tests (see DEPENDENCIES.md: one
        // crypto backend, ring).
        let tls =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(FETCH_TIMEOUT));
        http.enforce_http(false);
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    /// GETs `url` and returns the body of a 2xx answer as text.
    pub async fn get_text(&self, url: &str) -> Result<String, FetchError> {
        let (status, body) = self
            .send(url, http::Method::GET, Bytes::new(), FETCH_TIMEOUT)
            .await?;
        if !(200..300).contains(&status) {
            return Err(FetchError::Status {
                url: url.to_string(),
                status,
            });
        }
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// POSTs `body` as JSON and returns the answer's status code (any status: a webhook's
    /// verdict is its status).
    pub async fn post_json(
        &self,
        url: &str,
        body: &serde_json::Value,
        timeout: Duration,
    ) -> Result<u16, FetchError> {
        let bytes = Bytes::from(serde_json::to_vec(body).unwrap_or_default());
        self.send(url, http::Method::POST, bytes, timeout)
            .await
            .map(|(status, _)| status)
    }

    async fn send(
        &self,
        url: &str,
        method: http::Method,
        body: Bytes,
        timeout: Duration,
    ) -> Result<(u16, Bytes), FetchError> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| FetchError::Url {
                url: url.to_string(),
                message: e.to_string(),
            })?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(FetchError::Scheme {
                url: url.to_string(),
            });
        }
        let post = method == http::Method::POST;
        let mut req = http::Request::builder().method(method).uri(uri);
        if post {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
        }
        let req = req.body(Full::new(body)).map_err(|e| FetchError::Url {
            url: url.to_string(),
            message: e.to_string(),
        })?;
        let transport = |e: &dyn std::fmt::Display| FetchError::Transport {
            url: url.to_string(),
            message: e.to_string(),
        };
        let call = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| request_error(url, &e))?;
            let status = resp.status().as_u16();
            let limited = http_body_util::Limited::new(resp.into_body(), MAX_BODY);
            let body = limited.collect().await.map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    FetchError::TooLarge {
                        url: url.to_string(),
                    }
                } else {
                    transport(&e)
                }
            })?;
            Ok((status, body.to_bytes()))
        };
        tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| FetchError::Timeout {
                url: url.to_string(),
                timeout,
            })?
    }
}

/// What a failed request says: the certificate problem when the TLS handshake refused the
/// server, else the chain of causes (hyper's own message alone is "client error (Connect)").
fn request_error(url: &str, e: &(dyn std::error::Error + 'static)) -> FetchError {
    let mut messages = Vec::new();
    let mut cause = Some(e);
    while let Some(err) = cause {
        if let Some(tls) = rustls_error(err) {
            return match tls {
                rustls::Error::InvalidCertificate(_) => FetchError::Certificate {
                    url: url.to_string(),
                    message: tls.to_string(),
                },
                _ => FetchError::Transport {
                    url: url.to_string(),
                    message: format!("TLS handshake failed: {tls}"),
                },
            };
        }
        let text = err.to_string();
        if !messages.contains(&text) {
            messages.push(text);
        }
        cause = err.source();
    }
    FetchError::Transport {
        url: url.to_string(),
        message: messages.join(": "),
    }
}

/// The rustls error inside `err`: tokio-rustls wraps a handshake failure in an io::Error and
/// hyper-rustls wraps that in another, and io::Error's `source` skips the error it wraps, so
/// look inside each layer.
fn rustls_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(tls) = err.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    let inner = err.downcast_ref::<std::io::Error>()?.get_ref()?;
    rustls_error(inner)
}

/// The public web PKI's roots (Mozilla's list, compiled in).
fn web_pki_roots() -> RootCertStore {
    RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

/// The value of a Prometheus instant-query answer (`/api/v1/query`): the first sample of a
/// vector, or a scalar. `None` for an empty result (no data), or an answer that is not a
/// successful one.
pub fn instant_value(answer: &serde_json::Value) -> Option<f64> {
    if answer.get("status").and_then(|s| s.as_str()) != Some("success") {
        return None;
    }
    let data = answer.get("data")?;
    let value = match data.get("resultType").and_then(|t| t.as_str())? {
        "vector" => data.get("result")?.as_array()?.first()?.get("value")?,
        "scalar" => data.get("result")?,
        _ => return None,
    };
    value
        .get(1)?
        .as_str()?
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
}

/// The URL of an instant query of `query` at a Prometheus server's base `address`.
pub fn query_url(address: &str, query: &str) -> String {
    format!(
        "{}/api/v1/query?query={}",
        address.trim_end_matches('/'),
        percent_encode(query)
    )
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instant_answers() {
        let vector = serde_json::json!({"status": "success", "data": {"resultType": "vector",
            "result": [{"metric": {}, "value": [1700000000.0, "99.5"]}]}});
        assert_eq!(instant_value(&vector), Some(99.5));
        let empty = serde_json::json!({"status": "success", "data": {"resultType": "vector", "result": []}});
        assert_eq!(instant_value(&empty), None);
        let scalar = serde_json::json!({"status": "success", "data": {"resultType": "scalar",
            "result": [1700000000.0, "3"]}});
        assert_eq!(instant_value(&scalar), Some(3.0));
        let nan = serde_json::json!({"status": "success", "data": {"resultType": "scalar",
            "result": [1700000000.0, "NaN"]}});
        assert_eq!(instant_value(&nan), None);
        let error = serde_json::json!({"status": "error", "error": "bad query"});
        assert_eq!(instant_value(&error), None);
    }

    #[test]
    fn query_urls_are_encoded() {
        assert_eq!(
            query_url("http://prom:9090/", "sum(x{a=\"b c\"})"),
            "http://prom:9090/api/v1/query?query=sum%28x%7Ba%3D%22b%20c%22%7D%29"
        );
    }

    #[tokio::test]
    async fn other_schemes_are_refused() {
        let err = Fetcher::new()
            .get_text("ftp://example.invalid/metrics")
            .await
            .unwrap_err();
        assert!(matches!(err, FetchError::Scheme { .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with("ftp://example.invalid/metrics: ")
        );
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused_naming_it() {
        let dir = std::env::temp_dir().join(format!("mizzen-ca-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("empty.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let err = Fetcher::with_ca_file(&path).err().unwrap();
        assert!(matches!(err, CaFileError::Empty { .. }), "{err}");
        assert!(err.to_string().contains("empty.pem"), "{err}");
        let missing = Fetcher::with_ca_file(&dir.join("missing.pem"))
            .err()
            .unwrap();
        assert!(matches!(missing, CaFileError::Read { .. }), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
