//! Issuance at node scale (a benchmark, not a timed test): a node agent signing certificates for
//! the kubelet's default maximum of 110 pods. Measures, per certificate, the proxy's side (key +
//! CSR), the agent's side (CSR check + signing) and the verification a peer does at handshake.
//! Run with `cargo bench -p mizzen-ca --bench issue`.

use std::time::{Duration, Instant, SystemTime};

use mizzen_ca::{
    Authority, DEFAULT_NODE_CA_TTL, DEFAULT_ROOT_VALIDITY, DEFAULT_WORKLOAD_TTL, RootCa,
    node_ca_request,
};
use mizzen_identity::bundle::certs_from_pem;
use mizzen_identity::svid::{self, Role};
use mizzen_identity::{CertificateRequest, SpiffeId};
use rustls_pki_types::UnixTime;

const PODS: usize = 110;

fn main() {
    let root = RootCa::generate("cluster.local", DEFAULT_ROOT_VALIDITY).unwrap();
    let parent = root.authority(None).unwrap();
    let request = node_ca_request("node-1").unwrap();
    let issued = parent
        .sign_node_ca(&request.csr_pem, "node-1", DEFAULT_NODE_CA_TTL)
        .unwrap();
    let node =
        Authority::from_node_ca(&issued.chain_pem, request.key, parent.roots().clone()).unwrap();

    let ids: Vec<SpiffeId> = (0..PODS)
        .map(|i| {
            SpiffeId::new("cluster.local", format!("ns-{}", i % 10), format!("sa-{i}")).unwrap()
        })
        .collect();

    let start = Instant::now();
    let requests: Vec<CertificateRequest> = ids
        .iter()
        .map(|id| CertificateRequest::for_workload(id).unwrap())
        .collect();
    let keygen = start.elapsed();

    let start = Instant::now();
    let chains: Vec<String> = requests
        .iter()
        .zip(&ids)
        .map(|(r, id)| {
            node.sign_workload(&r.csr_pem, id, DEFAULT_WORKLOAD_TTL)
                .unwrap()
                .chain_pem
        })
        .collect();
    let signing = start.elapsed();

    let now = UnixTime::since_unix_epoch(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap(),
    );
    let start = Instant::now();
    for (chain, id) in chains.iter().zip(&ids) {
        let certs = certs_from_pem(chain).unwrap();
        let got =
            svid::verify_chain(node.roots(), &certs[0], &certs[1..], now, Role::Client).unwrap();
        assert_eq!(&got, id);
    }
    let verifying = start.elapsed();

    let per = |d: Duration| d.as_secs_f64() * 1000.0 / PODS as f64;
    println!("{PODS} workload certificates on one node CA:");
    println!(
        "  proxy side, key + CSR:      {:8.2} ms total, {:.3} ms each",
        keygen.as_secs_f64() * 1000.0,
        per(keygen)
    );
    println!(
        "  agent side, check + sign:   {:8.2} ms total, {:.3} ms each",
        signing.as_secs_f64() * 1000.0,
        per(signing)
    );
    println!(
        "  peer side, chain + SPIFFE:  {:8.2} ms total, {:.3} ms each",
        verifying.as_secs_f64() * 1000.0,
        per(verifying)
    );
}
