//! A fake node agent: the workload API's wire form (JSON lines over HTTP/1.1) on a real Unix
//! socket, signing with an in-memory `mizzen-ca` root. Enough of the real agent's behaviour to
//! drive proxies through rotations:
//! - per identity stream it signs the proxy's CSR with a short lifetime, then re-signs the same
//!   CSR before half that lifetime has passed (with jitter) and pushes each renewal;
//! - [`FakeAgent::trust`] pushes a new trust bundle to every stream, and [`FakeAgent::sign_with`]
//!   switches the signing root and re-signs every stream at once, so a test plays a root
//!   rotation step by step (overlap bundle, new signer, new root alone).
//!
//! The token stands in for the TokenReview: it is the workload's SPIFFE id, written by
//! [`FakeAgent::settings`]. `GET /v1/endpoints` answers one empty snapshot and stays open, so
//! the proxy keeps its config's endpoints.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use mizzen_ca::{Authority, RootCa};
use mizzen_identity::workload_api::{Event, SignRequest};
use mizzen_identity::{CertStore, CertificateRequest, SpiffeId, TrustBundle};
use mizzen_proxy::{agent, env::AgentSettings};
use tokio::net::UnixListener;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// The fake agent, serving until dropped.
pub struct FakeAgent {
    inner: Arc<Inner>,
    socket: PathBuf,
    task: JoinHandle<()>,
}

struct Inner {
    ttl: Duration,
    /// Who signs and which roots go with every certificate and bundle.
    signer: Mutex<Signer>,
    /// The open identity streams; pruned when a proxy hangs up.
    streams: Mutex<Vec<Subscriber>>,
    /// Certificates signed so far, first ones and renewals.
    issued: AtomicUsize,
}

struct Signer {
    root: Arc<RootCa>,
    roots: TrustBundle,
    authority: Authority,
}

/// One proxy's identity stream: what to re-sign and where to push.
struct Subscriber {
    id: SpiffeId,
    csr_pem: String,
    tx: mpsc::UnboundedSender<Event>,
}

impl Inner {
    /// A certificate for `id` from `csr_pem` by the current signer, with the current roots.
    fn sign(signer: &Signer, ttl: Duration, id: &SpiffeId, csr_pem: &str) -> Event {
        let issued = signer
            .authority
            .sign_workload(csr_pem, id, ttl)
            .expect("the fake agent signs the proxy's CSR");
        Event::Certificate {
            chain_pem: issued.chain_pem,
            roots_pem: issued.roots_pem,
            not_after: issued
                .not_after
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs(),
        }
    }

    /// Signs for `subscriber` and pushes it, under the signer's lock: a renewal never overtakes
    /// a bundle pushed after it was signed (its roots would undo the bundle).
    fn push_certificate(&self, signer: &Signer, subscriber: &Subscriber) -> bool {
        let event = Self::sign(signer, self.ttl, &subscriber.id, &subscriber.csr_pem);
        let sent = subscriber.tx.send(event).is_ok();
        if sent {
            self.issued.fetch_add(1, Ordering::SeqCst);
        }
        sent
    }

    /// Each stream's renewals: re-sign between 40% and 50% of the lifetime, until the proxy
    /// hangs up.
    async fn renew(
        self: Arc<Self>,
        id: SpiffeId,
        csr_pem: String,
        tx: mpsc::UnboundedSender<Event>,
    ) {
        let subscriber = Subscriber { id, csr_pem, tx };
        loop {
            let after = self.ttl.mul_f64(0.4 + 0.1 * rand::random::<f64>());
            tokio::select! {
                () = tokio::time::sleep(after) => {}
                () = subscriber.tx.closed() => return,
            }
            let signer = self.signer.lock().unwrap();
            if !self.push_certificate(&signer, &subscriber) {
                return;
            }
        }
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        match (req.method(), req.uri().path()) {
            (&Method::POST, agent::IDENTITY_PATH) => self.identity(req).await,
            (&Method::GET, agent::ENDPOINTS_PATH) => {
                let empty = r#"{"v":1,"services":[]}"#.to_string() + "\n";
                let lines =
                    futures::stream::once(async move { Ok(Frame::data(Bytes::from(empty))) })
                        .chain(futures::stream::pending());
                Response::new(StreamBody::new(lines).boxed_unsync())
            }
            _ => refusal(StatusCode::NOT_FOUND, format!("no route {}", req.uri())),
        }
    }

    async fn identity(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let body = match req.into_body().collect().await {
            Ok(body) => body.to_bytes(),
            Err(e) => return refusal(StatusCode::BAD_REQUEST, e.to_string()),
        };
        let request = match SignRequest::from_json(&body) {
            Ok(request) => request,
            Err(e) => return refusal(StatusCode::BAD_REQUEST, e.to_string()),
        };
        let id = match SpiffeId::parse(&request.token) {
            Ok(id) => id,
            Err(e) => return refusal(StatusCode::UNAUTHORIZED, format!("token: {e}")),
        };
        let (tx, rx) = mpsc::unbounded_channel::<Event>();
        let subscriber = Subscriber {
            id: id.clone(),
            csr_pem: request.csr_pem.clone(),
            tx: tx.clone(),
        };
        {
            let signer = self.signer.lock().unwrap();
            self.push_certificate(&signer, &subscriber);
            self.streams.lock().unwrap().push(subscriber);
        }
        tokio::spawn(self.clone().renew(id, request.csr_pem, tx));
        let lines = futures::stream::unfold(rx, |mut rx| async move {
            let event = rx.recv().await?;
            Some((Ok(Frame::data(Bytes::from(event.to_line()))), rx))
        });
        Response::new(StreamBody::new(lines).boxed_unsync())
    }

    /// The streams still open, closed ones forgotten.
    fn open_streams(&self) -> std::sync::MutexGuard<'_, Vec<Subscriber>> {
        let mut streams = self.streams.lock().unwrap();
        streams.retain(|s| !s.tx.is_closed());
        streams
    }
}

fn refusal(status: StatusCode, message: String) -> Response<Body> {
    let line = Event::Error { message }.to_line();
    let mut response = Response::new(Full::new(Bytes::from(line)).boxed_unsync());
    *response.status_mut() = status;
    response
}

impl FakeAgent {
    /// An agent at `dir/agent.sock` signing `ttl`-long certificates with `root` alone.
    pub fn start(dir: &Path, root: Arc<RootCa>, ttl: Duration) -> FakeAgent {
        let authority = root.authority(None).expect("an authority for the root");
        let roots = authority.roots().clone();
        let inner = Arc::new(Inner {
            ttl,
            signer: Mutex::new(Signer {
                root,
                roots,
                authority,
            }),
            streams: Mutex::new(Vec::new()),
            issued: AtomicUsize::new(0),
        });
        let socket = dir.join("agent.sock");
        let serving = inner.clone();
        let task = serve_unix(&socket, move |req| serving.clone().handle(req));
        FakeAgent {
            inner,
            socket,
            task,
        }
    }

    /// A proxy's agent settings for workload `id`: this socket, and a token file in `dir`.
    pub fn settings(&self, dir: &Path, id: &SpiffeId) -> AgentSettings {
        let token_file = dir.join("token");
        std::fs::write(&token_file, format!("{}\n", id.uri())).expect("write the token");
        AgentSettings {
            socket: self.socket.clone(),
            token_file,
        }
    }

    /// Hands out `roots` from now on and pushes them to every stream. They must contain the
    /// signing root.
    pub fn trust(&self, roots: TrustBundle) {
        let mut signer = self.inner.signer.lock().unwrap();
        signer.authority = signer
            .root
            .authority(Some(roots.clone()))
            .expect("the bundle must contain the signing root");
        signer.roots = roots.clone();
        let event = Event::Bundle {
            roots_pem: roots.to_pem(),
        };
        for stream in self.inner.open_streams().iter() {
            let _ = stream.tx.send(event.clone());
        }
    }

    /// Signs with `root` from now on (it must be in the current bundle) and re-signs every
    /// stream at once.
    pub fn sign_with(&self, root: Arc<RootCa>) {
        let mut signer = self.inner.signer.lock().unwrap();
        signer.authority = root
            .authority(Some(signer.roots.clone()))
            .expect("the new signing root must be trusted already");
        signer.root = root;
        for stream in self.inner.open_streams().iter() {
            self.inner.push_certificate(&signer, stream);
        }
    }

    /// A store holding a certificate for `id` as this agent would issue it now (current signer,
    /// current roots): a peer for handshakes the test makes itself.
    pub fn certify(&self, id: &SpiffeId, ttl: Duration) -> Arc<CertStore> {
        let request = CertificateRequest::for_workload(id).expect("a key and CSR");
        let signer = self.inner.signer.lock().unwrap();
        let issued = signer
            .authority
            .sign_workload(&request.csr_pem, id, ttl)
            .expect("the fake agent signs a peer's CSR");
        let store = CertStore::new(id.clone());
        store
            .update(&issued.chain_pem, request.key, signer.roots.clone())
            .expect("a certificate the store takes");
        store
    }

    /// The current roots.
    pub fn roots(&self) -> TrustBundle {
        self.inner.signer.lock().unwrap().roots.clone()
    }

    /// Certificates signed so far (first ones and renewals).
    pub fn issued(&self) -> usize {
        self.inner.issued.load(Ordering::SeqCst)
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves HTTP/1.1 on a Unix socket at `socket` (replacing a stale one), each request answered
/// by `handle`, until the task is aborted (which closes its connections too).
pub fn serve_unix<F, Fut>(socket: &Path, handle: F) -> JoinHandle<()>
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket).expect("bind the fake agent's socket");
    tokio::spawn(async move {
        let mut connections = JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            let handle = handle.clone();
            connections.spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let answer = handle(req);
                    async move { Ok::<_, Infallible>(answer.await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}
