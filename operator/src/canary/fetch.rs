//! The canary controller's outgoing HTTP: scraping a proxy's `/stats/prometheus`, asking a
//! Prometheus server an instant query, and POSTing to a webhook. One small plain-HTTP client,
//! shared by the Kubernetes and the file shells, every call bounded by a timeout.
//!
//! Plain `http://` only: the proxies' metrics port and in-cluster webhook Services speak it, and
//! an `https://` URL is refused with an error that says so rather than sent in plaintext.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

/// Timeout of a scrape or a query; a webhook has its own (`timeout`, default [`WEBHOOK_TIMEOUT`]).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// A webhook's timeout when it gives none (Flagger's default).
pub const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest answer read (a busy proxy's exposition is a few hundred KiB).
const MAX_BODY: usize = 16 << 20;

/// Why an HTTP call gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: only http:// URLs are supported")]
    Scheme { url: String },
    #[error("{url}: not a valid URL: {message}")]
    Url { url: String, message: String },
    #[error("{url}: no answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("{url}: {message}")]
    Transport { url: String, message: String },
    #[error("{url}: answered {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: the answer is larger than {MAX_BODY} bytes")]
    TooLarge { url: String },
}

/// A plain-HTTP client with timeouts.
#[derive(Clone)]
pub struct Fetcher {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for Fetcher {
    fn default() -> Self {
        Self::new()
    }
}

impl Fetcher {
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(FETCH_TIMEOUT));
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
        if uri.scheme_str() != Some("http") {
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
            let resp = self.client.request(req).await.map_err(|e| transport(&e))?;
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
    async fn https_is_refused_not_downgraded() {
        let err = Fetcher::new()
            .get_text("https://example.invalid/metrics")
            .await
            .unwrap_err();
        assert!(matches!(err, FetchError::Scheme { .. }), "{err}");
    }
}
