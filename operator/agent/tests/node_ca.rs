//! The node CA renewal loop against an in-memory signer: it waits for roots, retries a failed
//! request with backoff, and publishes an authority that signs leaves verifying to the roots.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use mizzen_agent::metrics::Metrics;
use mizzen_agent::node_ca::{self, NodeCaError, NodeCaSettings, NodeCaSigner};
use mizzen_ca::RootCa;
use mizzen_identity::bundle::certs_from_pem;
use mizzen_identity::svid::{self, Role};
use mizzen_identity::{CertificateRequest, RefreshPolicy, SpiffeId, TrustBundle};
use rustls_pki_types::UnixTime;
use tokio::sync::watch;

/// Refuses the first `failures` requests, then signs with `root`.
struct FlakySigner {
    root: RootCa,
    failures: u32,
    calls: AtomicU32,
}

impl NodeCaSigner for FlakySigner {
    fn sign<'a>(
        &'a self,
        node: &'a str,
        csr_pem: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<String, NodeCaError>> {
        Box::pin(async move {
            let call = self.calls.fetch_add(1, Ordering::SeqCst);
            if call < self.failures {
                return Err(NodeCaError::Wait {
                    name: format!("attempt-{call}"),
                    reason: "not signed in time".into(),
                });
            }
            let issued = self
                .root
                .authority(None)?
                .sign_node_ca(csr_pem, node, ttl)
                .map_err(|e| NodeCaError::Wait {
                    name: "signing".into(),
                    reason: e.to_string(),
                })?;
            Ok(issued.chain_pem)
        })
    }
}

#[tokio::test]
async fn waits_for_roots_retries_failures_and_publishes_a_working_authority() {
    let root = RootCa::generate("cluster.local", Duration::from_secs(24 * 3600)).unwrap();
    let bundle = TrustBundle::from_der([root.cert_der().clone()]).unwrap();
    let signer = Arc::new(FlakySigner {
        root,
        failures: 2,
        calls: AtomicU32::new(0),
    });
    let (roots_tx, roots_rx) = watch::channel(None);
    let (out, mut authorities) = watch::channel(None);
    let metrics = Metrics::default();
    tokio::spawn(node_ca::keep_node_ca(
        signer.clone(),
        NodeCaSettings {
            node: "node-a".into(),
            ttl: Duration::from_secs(3600),
            policy: RefreshPolicy {
                retry_initial: Duration::from_millis(20),
                ..RefreshPolicy::default()
            },
        },
        roots_rx,
        out,
        metrics.clone(),
    ));
    // Nothing is asked for before the roots are known.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(signer.calls.load(Ordering::SeqCst), 0);
    roots_tx.send_replace(Some(bundle.clone()));

    let authority = tokio::time::timeout(
        Duration::from_secs(5),
        authorities.wait_for(Option::is_some),
    )
    .await
    .unwrap()
    .unwrap()
    .clone()
    .unwrap();
    assert_eq!(
        signer.calls.load(Ordering::SeqCst),
        3,
        "two failures, then success"
    );
    let failed = metrics
        .node_ca_requests
        .get_or_create(&vec![("result".into(), "error".into())])
        .get();
    assert_eq!(failed, 2);

    let id = SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/cart").unwrap();
    let csr = CertificateRequest::for_workload(&id).unwrap();
    let issued = authority
        .sign_workload(&csr.csr_pem, &id, Duration::from_secs(600))
        .unwrap();
    let chain = certs_from_pem(&issued.chain_pem).unwrap();
    let now = UnixTime::since_unix_epoch(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap(),
    );
    assert_eq!(
        svid::verify_chain(&bundle, &chain[0], &chain[1..], now, Role::Client).unwrap(),
        id
    );
    let expiry = metrics.node_ca_expiry.get();
    let want = authority
        .validity()
        .not_after
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert_eq!(expiry, want);
}
