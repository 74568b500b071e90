//! A connection to an upstream endpoint, plaintext or (mesh or originated) TLS, or a tunnel
//! through an HTTP proxy, as one stream type for the HTTP client and the TCP forwarder.

use std::{
    io::{self, IoSlice},
    pin::Pin,
    task::{Context, Poll},
};

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_rustls::{client::TlsStream, server};

pub enum Stream {
    Plain(TcpStream),
    Mtls(Box<TlsStream<TcpStream>>),
    /// A `CONNECT` tunnel through an HTTP proxy ([`crate::tunnel`]).
    Tunnel(Box<TokioIo<Upgraded>>),
}

/// Whether a read of TLS over `tcp` would find nothing: rustls holds nothing decrypted (nor a
/// close) and the socket has nothing new, in which case the task is woken when it has. Asked
/// before reading through rustls, which costs several times as much to learn the same: hyper
/// polls a connection for reading several times a request, most of them before anything has
/// arrived (callgrind, mTLS outbound: 6.8 reads a request, 2 with data).
fn nothing_to_read(tcp: &TcpStream, tls: &rustls::CommonState, cx: &mut Context<'_>) -> bool {
    tls.wants_read() && tcp.poll_read_ready(cx).is_pending()
}

/// The server side of a TLS connection (a mesh connection inbound, one the gateway
/// terminates), read as [`Stream::Mtls`] is. A type of its own rather than a variant of
/// [`Stream`]: a fourth variant cost every plaintext read and write of the upstream side
/// (callgrind, plaintext outbound, same hour: 42,890 instructions a request against 42,064).
pub struct ServerTlsStream(server::TlsStream<TcpStream>);

impl ServerTlsStream {
    pub fn new(stream: server::TlsStream<TcpStream>) -> Self {
        Self(stream)
    }
}

impl AsyncRead for ServerTlsStream {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let (tcp, tls) = this.0.get_ref();
        if nothing_to_read(tcp, tls, cx) {
            return Poll::Pending;
        }
        Pin::new(&mut this.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ServerTlsStream {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }

    #[inline]
    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    #[inline]
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

impl AsyncRead for Stream {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Mtls(s) => {
                let (tcp, tls) = s.get_ref();
                if nothing_to_read(tcp, tls, cx) {
                    return Poll::Pending;
                }
                Pin::new(s.as_mut()).poll_read(cx, buf)
            }
            Stream::Tunnel(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Mtls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Tunnel(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Mtls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            Stream::Tunnel(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    #[inline]
    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Mtls(s) => s.is_write_vectored(),
            Stream::Tunnel(s) => s.is_write_vectored(),
        }
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Mtls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Tunnel(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    #[inline]
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Mtls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Tunnel(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    use super::*;

    /// A server and a client config trusting it, over one self-signed certificate.
    fn configs() -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let der = cert.cert.der().clone();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![der.clone()], key)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (Arc::new(server), Arc::new(client))
    }

    /// Both ends of a TLS connection on loopback: the server's read as the proxy reads it.
    async fn pair() -> (ServerTlsStream, Stream) {
        let (server, client) = configs();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connect = async {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let tls = tokio_rustls::TlsConnector::from(client)
                .connect("localhost".try_into().unwrap(), tcp)
                .await
                .unwrap();
            Stream::Mtls(Box::new(tls))
        };
        let accept = async {
            let (tcp, _) = listener.accept().await.unwrap();
            let tls = tokio_rustls::TlsAcceptor::from(server).accept(tcp).await;
            ServerTlsStream::new(tls.unwrap())
        };
        tokio::join!(accept, connect)
    }

    /// A read of `reader` before anything is sent waits, and the bytes `writer` sends later
    /// wake it; they all arrive, read 7 at a time.
    async fn read_through(
        reader: &mut (dyn AsyncRead + Unpin + Send),
        writer: &mut (dyn AsyncWrite + Unpin + Send),
    ) {
        let payload: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        let mut piece = [0u8; 7];
        let early = tokio::time::timeout(Duration::from_millis(50), reader.read(&mut piece));
        assert!(early.await.is_err(), "a read returned with nothing sent");
        let send = async {
            writer.write_all(&payload).await.unwrap();
            writer.flush().await.unwrap();
        };
        let receive = async {
            let mut got = Vec::new();
            while got.len() < payload.len() {
                let n = reader.read(&mut piece).await.unwrap();
                assert!(n > 0, "end of stream after {} bytes", got.len());
                got.extend_from_slice(&piece[..n]);
            }
            got
        };
        let ((), got) = tokio::time::timeout(Duration::from_secs(10), async {
            tokio::join!(send, receive)
        })
        .await
        .expect("a read never woke");
        assert_eq!(got, payload);
    }

    #[tokio::test]
    async fn tls_reads_wait_for_the_peer_and_deliver_everything_in_small_pieces() {
        let (mut server, mut client) = pair().await;
        read_through(&mut server, &mut client).await;
        read_through(&mut client, &mut server).await;
    }
}
