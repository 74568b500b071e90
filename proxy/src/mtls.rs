//! Mutual TLS between proxies: this workload's certificate, the rustls configs built on it, and
//! the two places a connection changes hands — accepting on the inbound side (where the peer's
//! SPIFFE identity is learnt) and connecting on the outbound side.
//!
//! The certificate lives in a [`CertStore`] that the node agent's stream keeps current (or that
//! files fill, in local mode and benchmarks); the configs read it on every handshake, so a
//! renewal or a root rotation takes effect on the next connection and never drops open ones.
//!
//! ALPN carries the application protocol over the mesh hop: `h2` or `http/1.1` for HTTP, and
//! none for raw TCP, which is how the inbound side tells them apart after the handshake.
//!
//! Secure naming: the outbound side accepts a server only when its SPIFFE id is one the
//! destination may have ([`ExpectedPeer`]: the endpoint's service account, or the
//! DestinationRule's `subjectAltNames`; any workload of the trust domain when neither is known).
//! rustls fixes the verifier in the config, so there is one set of connectors per distinct
//! expected set, made on first use and kept ([`MeshTls::connectors`]), not one per connection.
//!
//! TLS towards destinations outside the mesh (DestinationRule `SIMPLE` / `MUTUAL`) is
//! [`origination`]'s.

pub mod origination;

use std::{
    collections::HashMap,
    io,
    path::Path,
    sync::{Arc, Mutex},
};

use mizzen_identity::{CertStore, ExpectedPeer, PrivateKey, SpiffeId, TrustBundle, svid, tls};
use rustls::pki_types::ServerName;
use tokio::{io::AsyncWriteExt, net::TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector, client, server};

impl std::fmt::Debug for MeshTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshTls")
            .field("id", &self.store.id().to_string())
            .field("ready", &self.ready())
            .finish()
    }
}

/// What the outbound side sends over a mesh connection, as told by ALPN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alpn {
    H2,
    Http1,
    /// Raw TCP: no ALPN.
    Tcp,
}

impl Alpn {
    fn protocols(self) -> Vec<Vec<u8>> {
        match self {
            Alpn::H2 => vec![b"h2".to_vec()],
            Alpn::Http1 => vec![b"http/1.1".to_vec()],
            Alpn::Tcp => Vec::new(),
        }
    }

    fn of(negotiated: Option<&[u8]>) -> Alpn {
        match negotiated {
            Some(b"h2") => Alpn::H2,
            Some(b"http/1.1") => Alpn::Http1,
            _ => Alpn::Tcp,
        }
    }
}

/// This proxy's side of mesh mTLS.
pub struct MeshTls {
    pub store: Arc<CertStore>,
    acceptor: TlsAcceptor,
    /// For destinations of unknown identity: any workload of the trust domain.
    any: Arc<Connectors>,
    /// For destinations whose identities are known, by expected set.
    by_expected: Mutex<HashMap<ExpectedPeer, Arc<Connectors>>>,
}

/// More distinct expected sets than this (a mesh has one per service account that serves, so
/// reaching it means churn) and the cache starts over; connections being made keep theirs.
const MAX_EXPECTED_SETS: usize = 4096;

/// The client configs for one expected set, one per ALPN choice.
pub struct Connectors([(Alpn, TlsConnector); 3]);

impl Connectors {
    fn new(store: &Arc<CertStore>, expected: &ExpectedPeer) -> Result<Self, MtlsError> {
        let connector = |alpn: Alpn| -> Result<(Alpn, TlsConnector), MtlsError> {
            let mut config = tls::client_config(store, expected.clone())?;
            config.alpn_protocols = alpn.protocols();
            Ok((alpn, TlsConnector::from(Arc::new(config))))
        };
        Ok(Connectors([
            connector(Alpn::H2)?,
            connector(Alpn::Http1)?,
            connector(Alpn::Tcp)?,
        ]))
    }

    fn get(&self, alpn: Alpn) -> &TlsConnector {
        &self
            .0
            .iter()
            .find(|(a, _)| *a == alpn)
            .expect("a connector for every ALPN choice")
            .1
    }
}

/// An accepted mesh connection: the stream, the peer's identity and what it speaks.
pub struct Accepted {
    pub stream: server::TlsStream<TcpStream>,
    pub peer: SpiffeId,
    pub alpn: Alpn,
}

#[derive(Debug, thiserror::Error)]
pub enum MtlsError {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("reading {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl MeshTls {
    /// Configs over `store`; handshakes fail until it holds a certificate.
    pub fn new(store: Arc<CertStore>) -> Result<Self, MtlsError> {
        // Peers are proxies of the mesh: a TLS client without a mesh certificate is refused.
        let server = tls::server_config(&store, true)?;
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            any: Arc::new(Connectors::new(&store, &ExpectedPeer::Any)?),
            by_expected: Mutex::new(HashMap::new()),
            store,
        })
    }

    /// A store filled from files: the certificate chain (leaf first), its key and the roots,
    /// all PEM. The identity is the leaf's SPIFFE id.
    pub fn from_files(chain: &Path, key: &Path, roots: &Path) -> Result<Self, MtlsError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|source| MtlsError::Read {
                path: p.display().to_string(),
                source,
            })
        };
        let invalid = |p: &Path, message: String| MtlsError::Invalid {
            path: p.display().to_string(),
            message,
        };
        let chain_pem = read(chain)?;
        let leaf = mizzen_identity::bundle::certs_from_pem(&chain_pem)
            .map_err(|e| invalid(chain, e.to_string()))?
            .into_iter()
            .next()
            .ok_or_else(|| invalid(chain, "no certificate in the file".into()))?;
        let id = svid::spiffe_id(&leaf).map_err(|e| invalid(chain, e.to_string()))?;
        let key = PrivateKey::from_pem(&read(key)?).map_err(|e| invalid(key, e.to_string()))?;
        let bundle =
            TrustBundle::from_pem(&read(roots)?).map_err(|e| invalid(roots, e.to_string()))?;
        let store = CertStore::new(id);
        store.update(&chain_pem, key, bundle)?;
        Self::new(store)
    }

    /// Whether there is a certificate to present.
    pub fn ready(&self) -> bool {
        self.store.certified_key().is_some()
    }

    /// Completes the server side of a handshake; the client must present a mesh certificate.
    pub async fn accept(&self, stream: TcpStream) -> io::Result<Accepted> {
        let stream = self.acceptor.accept(stream).await?;
        let (_, conn) = stream.get_ref();
        let alpn = Alpn::of(conn.alpn_protocol());
        let peer = tls::peer_identity(conn).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::PermissionDenied,
                "peer has no SPIFFE identity",
            )
        })?;
        Ok(Accepted { stream, peer, alpn })
    }

    /// The connectors that accept exactly the servers `expected` allows, made once per set.
    pub fn connectors(&self, expected: &ExpectedPeer) -> Result<Arc<Connectors>, MtlsError> {
        if *expected == ExpectedPeer::Any {
            return Ok(self.any.clone());
        }
        let mut cache = self.by_expected.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cache.get(expected) {
            return Ok(c.clone());
        }
        if cache.len() >= MAX_EXPECTED_SETS {
            cache.clear();
        }
        let made = Arc::new(Connectors::new(&self.store, expected)?);
        cache.insert(expected.clone(), made.clone());
        Ok(made)
    }

    /// How many expected sets have connectors (for tests and the admin page).
    pub fn expected_sets(&self) -> usize {
        self.by_expected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Opens the client side of a mesh connection for `host` (the service, for SNI), accepting
    /// any workload of the trust domain. Prefer [`MeshTls::connect_expecting`] whenever the
    /// destination's identities are known.
    pub async fn connect(
        &self,
        stream: TcpStream,
        host: &str,
        port: u16,
        alpn: Alpn,
    ) -> io::Result<client::TlsStream<TcpStream>> {
        self.connect_expecting(stream, host, port, alpn, &ExpectedPeer::Any)
            .await
    }

    /// Opens the client side of a mesh connection for `host` (the service, for SNI); the
    /// handshake fails unless the server's SPIFFE id is one `expected` allows.
    pub async fn connect_expecting(
        &self,
        stream: TcpStream,
        host: &str,
        port: u16,
        alpn: Alpn,
        expected: &ExpectedPeer,
    ) -> io::Result<client::TlsStream<TcpStream>> {
        let connectors = self
            .connectors(expected)
            .map_err(|e| io::Error::other(e.to_string()))?;
        // Istio's SNI for the destination; IP hosts have none, so a fixed mesh name stands in.
        let name = tls::outbound_sni(port, "", host)
            .unwrap_or_else(|_| ServerName::try_from("outbound_.mesh.mizzen").expect("valid name"));
        connectors.get(alpn).connect(name, stream).await
    }
}

/// The first byte of a TLS handshake record: how PERMISSIVE tells mTLS from plaintext.
pub async fn starts_with_tls(stream: &TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(stream.peek(&mut b).await, Ok(1) if b[0] == 0x16)
}

/// Refuses a connection by closing it (STRICT mode and plaintext).
pub async fn refuse(mut stream: TcpStream) {
    let _ = stream.shutdown().await;
}
