//! A small HTTPS client for the webhook's tests and load generator: one TLS connection (HTTP/1.1
//! keep-alive) per client, which tells what certificate the server presented.

use std::{net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, ServerName},
};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// A TLS client config trusting the PEM certificates in `roots` (HTTP/1.1 by ALPN).
pub fn client_config(roots: &[&str]) -> Arc<ClientConfig> {
    let mut store = RootCertStore::empty();
    for pem in roots {
        for cert in <CertificateDer<'_> as rustls::pki_types::pem::PemObject>::pem_slice_iter(
            pem.as_bytes(),
        ) {
            store
                .add(cert.expect("test roots are PEM"))
                .expect("a usable root");
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the defaults")
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Full handshakes only: a resumed session would report the certificate of the session it
    // resumed, not the one the server holds now.
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// One keep-alive HTTPS connection.
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    /// The leaf certificate the server presented in this connection's handshake.
    pub peer_cert: Vec<u8>,
}

impl Conn {
    pub async fn connect(
        addr: SocketAddr,
        server_name: &str,
        config: Arc<ClientConfig>,
    ) -> std::io::Result<Self> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from(server_name.to_string()).map_err(std::io::Error::other)?;
        let tls = TlsConnector::from(config).connect(name, tcp).await?;
        let peer_cert = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .unwrap_or_default();
        let (sender, connection) = http1::handshake(TokioIo::new(tls))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Self { sender, peer_cert })
    }

    /// Sends one request and reads the whole answer.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<(u16, Bytes), hyper::Error> {
        let mut builder = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "mizzen-webhook");
        if let Some(ct) = content_type {
            builder = builder.header("content-type", ct);
        }
        let request = builder.body(Full::new(body)).expect("a valid request");
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    pub async fn post_json(
        &mut self,
        path: &str,
        body: Bytes,
    ) -> Result<(u16, Bytes), hyper::Error> {
        self.request("POST", path, Some("application/json"), body)
            .await
    }
}
