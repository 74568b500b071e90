//! Calls to the next service (productpage → reviews → ratings): plain HTTP/1.1 to a URL, which
//! in the mesh is the caller's own sidecar.
//!
//! Host names resolve through DNS, except those given in a static table, as `/etc/hosts` would:
//! the local mesh points `reviews.bookinfo.svc.cluster.local` at loopback, so the URL (and the
//! `Host` header the sidecars route and report on) names the service, while the port is the
//! caller's sidecar listener.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// How long one upstream call may take in all.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Why an upstream call gave no JSON.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("{url}: not a URL: {source}")]
    Url {
        url: String,
        source: http::uri::InvalidUri,
    },
    #[error("{url}: {source}")]
    Request {
        url: String,
        source: hyper_util::client::legacy::Error,
    },
    #[error("{url}: reading the answer: {source}")]
    Body { url: String, source: hyper::Error },
    #[error("{url} answered {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: the answer is not JSON: {source}")]
    Json {
        url: String,
        source: serde_json::Error,
    },
    #[error("{url}: no answer within {TIMEOUT:?}")]
    Timeout { url: String },
}

/// Names from a fixed table, anything else from the system resolver.
#[derive(Clone)]
pub struct Resolver {
    hosts: Arc<BTreeMap<String, IpAddr>>,
    system: GaiResolver,
}

type Resolving =
    Pin<Box<dyn Future<Output = std::io::Result<std::vec::IntoIter<SocketAddr>>> + Send>>;

impl tower::Service<Name> for Resolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Resolving;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        // The port is the URL's: the connector sets it on every address.
        if let Some(ip) = self.hosts.get(name.as_str()) {
            let addrs = vec![SocketAddr::new(*ip, 0)].into_iter();
            return Box::pin(std::future::ready(Ok(addrs)));
        }
        let lookup = self.system.call(name);
        Box::pin(async move { Ok(lookup.await?.collect::<Vec<_>>().into_iter()) })
    }
}

/// A pooled HTTP/1.1 client.
pub struct Upstream {
    client: Client<HttpConnector<Resolver>, Empty<Bytes>>,
}

impl Default for Upstream {
    fn default() -> Self {
        Self::new(BTreeMap::new())
    }
}

impl Upstream {
    /// A client resolving the names of `hosts` to their address without DNS.
    pub fn new(hosts: BTreeMap<String, IpAddr>) -> Self {
        let connector = HttpConnector::new_with_resolver(Resolver {
            hosts: Arc::new(hosts),
            system: GaiResolver::new(),
        });
        Upstream {
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    /// `GET url`, expecting a 2xx answer with a JSON body.
    pub async fn get_json(&self, url: &str) -> Result<Value, UpstreamError> {
        tokio::time::timeout(TIMEOUT, self.fetch(url))
            .await
            .unwrap_or_else(|_| {
                Err(UpstreamError::Timeout {
                    url: url.to_string(),
                })
            })
    }

    async fn fetch(&self, url: &str) -> Result<Value, UpstreamError> {
        let uri: http::Uri = url.parse().map_err(|source| UpstreamError::Url {
            url: url.to_string(),
            source,
        })?;
        let response = self
            .client
            .get(uri)
            .await
            .map_err(|source| UpstreamError::Request {
                url: url.to_string(),
                source,
            })?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|source| UpstreamError::Body {
                url: url.to_string(),
                source,
            })?
            .to_bytes();
        if !status.is_success() {
            return Err(UpstreamError::Status {
                url: url.to_string(),
                status: status.as_u16(),
            });
        }
        serde_json::from_slice(&body).map_err(|source| UpstreamError::Json {
            url: url.to_string(),
            source,
        })
    }
}
