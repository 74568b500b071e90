//! Tunnelling a TCP connection through an HTTP proxy (DestinationRule `tunnel`, Envoy's TCP
//! proxy `tunneling_config`): over the connection to the destination's endpoint (the proxy,
//! after the hop's TLS if any) an HTTP/1.1 `CONNECT <targetHost>:<targetPort>` is sent; a 2xx
//! answer turns the connection into the tunnel, which then carries the caller's bytes. Any
//! other answer, or none within the connect timeout, is a connection failure (UF), as the
//! proxy refusing would be.
//!
//! hyper speaks the HTTP: the request goes out on a client connection of its own, and the
//! upgraded connection is what the forwarder splices.

use std::time::Duration;

use http::{Method, Request};
use hyper::{client::conn::http1, upgrade::Upgraded};
use hyper_util::rt::TokioIo;
use mizzen_proxy_config::Tunnel;
use mizzen_resilience::UpstreamError;

use crate::{
    http::body::{self, BoxError},
    stream::Stream,
};

/// The tunnel's `CONNECT` authority.
pub fn authority(t: &Tunnel) -> String {
    if t.target_host.contains(':') && !t.target_host.starts_with('[') {
        format!("[{}]:{}", t.target_host, t.target_port)
    } else {
        format!("{}:{}", t.target_host, t.target_port)
    }
}

/// Opens the tunnel over `stream` within `timeout`.
pub async fn open(
    stream: Stream,
    t: &Tunnel,
    timeout: Duration,
) -> Result<TokioIo<Upgraded>, BoxError> {
    tokio::time::timeout(timeout, handshake(stream, t))
        .await
        .map_err(|_| {
            UpstreamError::connect_failure("the tunnel's CONNECT was not answered in time")
        })?
}

async fn handshake(stream: Stream, t: &Tunnel) -> Result<TokioIo<Upgraded>, BoxError> {
    let (mut tx, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(UpstreamError::connect_failure)?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "tunnel connection ended");
        }
    });
    let target = authority(t);
    let req = Request::builder()
        .method(Method::CONNECT)
        .uri(target.as_str())
        .header(http::header::HOST, target.as_str())
        .body(body::empty())?;
    let resp = tx
        .send_request(req)
        .await
        .map_err(UpstreamError::connect_failure)?;
    if !resp.status().is_success() {
        return Err(UpstreamError::connect_failure(format!(
            "the tunnel's CONNECT to {target} was answered {}",
            resp.status()
        ))
        .into());
    }
    let upgraded = hyper::upgrade::on(resp).await.map_err(|e| {
        UpstreamError::connect_failure(format!("the tunnel's CONNECT did not upgrade: {e}"))
    })?;
    Ok(TokioIo::new(upgraded))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connect_authority_brackets_ipv6() {
        let t = |host: &str| Tunnel {
            target_host: host.into(),
            target_port: 443,
        };
        assert_eq!(authority(&t("example.com")), "example.com:443");
        assert_eq!(authority(&t("10.0.0.1")), "10.0.0.1:443");
        assert_eq!(authority(&t("2001:db8::1")), "[2001:db8::1]:443");
    }
}
