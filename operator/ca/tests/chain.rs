//! The CA end to end: root → node intermediate → workload leaf, checked with webpki directly and
//! with the identity crate's verifiers (which the proxy's rustls configs use).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mizzen_ca::authority::BACKDATE;
use mizzen_ca::node::NodeCaError;
use mizzen_ca::workload::WorkloadError;
use mizzen_ca::{
    Authority, CaError, DEFAULT_NODE_CA_TTL, DEFAULT_ROOT_VALIDITY, DEFAULT_WORKLOAD_TTL, PluginCa,
    RootCa, node_ca_request,
};
use mizzen_identity::bundle::{certs_from_pem, certs_to_pem};
use mizzen_identity::svid::{self, Role};
use mizzen_identity::{CertStore, CertificateRequest, ExpectedPeer, SpiffeId, TrustBundle, tls};
use rustls_pki_types::{CertificateDer, UnixTime};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};

fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap()
}

fn unix(t: SystemTime) -> UnixTime {
    UnixTime::since_unix_epoch(t.duration_since(SystemTime::UNIX_EPOCH).unwrap())
}

/// A root, a node intermediate for `node-1` and the node agent's authority over it.
struct Mesh {
    root: RootCa,
    node: Authority,
}

fn mesh() -> Mesh {
    let root = RootCa::generate("cluster.local", DEFAULT_ROOT_VALIDITY).unwrap();
    let node = node_authority(
        &root.authority(None).unwrap(),
        "node-1",
        DEFAULT_NODE_CA_TTL,
    );
    Mesh { root, node }
}

fn node_authority(parent: &Authority, node: &str, ttl: Duration) -> Authority {
    let request = node_ca_request(node).unwrap();
    let issued = parent.sign_node_ca(&request.csr_pem, node, ttl).unwrap();
    Authority::from_node_ca(&issued.chain_pem, request.key, parent.roots().clone()).unwrap()
}

fn leaf_for(authority: &Authority, who: &SpiffeId) -> (mizzen_ca::Issued, CertificateRequest) {
    let request = CertificateRequest::for_workload(who).unwrap();
    let issued = authority
        .sign_workload(&request.csr_pem, who, DEFAULT_WORKLOAD_TTL)
        .unwrap();
    (issued, request)
}

fn webpki_verify(
    chain: &[CertificateDer<'_>],
    roots: &[CertificateDer<'static>],
    at: SystemTime,
) -> Result<(), webpki::Error> {
    let anchors: Vec<_> = roots
        .iter()
        .map(|r| webpki::anchor_from_trusted_cert(r).unwrap())
        .collect();
    let provider = rustls::crypto::ring::default_provider();
    let leaf = webpki::EndEntityCert::try_from(&chain[0])?;
    for usage in [
        webpki::KeyUsage::server_auth(),
        webpki::KeyUsage::client_auth(),
    ] {
        leaf.verify_for_usage(
            provider.signature_verification_algorithms.all,
            &anchors,
            &chain[1..],
            unix(at),
            usage,
            None,
            None,
        )?;
    }
    Ok(())
}

/// A full TLS handshake in memory between two stores' configs; returns each side's view of
/// the peer.
fn handshake(
    server: &Arc<CertStore>,
    client: &Arc<CertStore>,
    expected: ExpectedPeer,
) -> Result<(Option<SpiffeId>, Option<SpiffeId>), rustls::Error> {
    let server_config = Arc::new(tls::server_config(server, true).unwrap());
    let client_config = Arc::new(tls::client_config(client, expected).unwrap());
    let name = tls::outbound_sni(8080, "", "svc.ns.svc.cluster.local").unwrap();
    let mut c = rustls::ClientConnection::new(client_config, name)?;
    let mut s = rustls::ServerConnection::new(server_config)?;
    for _ in 0..20 {
        let mut buf = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut buf).unwrap();
        }
        if !buf.is_empty() {
            s.read_tls(&mut buf.as_slice()).unwrap();
            s.process_new_packets()?;
        }
        buf.clear();
        while s.wants_write() {
            s.write_tls(&mut buf).unwrap();
        }
        if !buf.is_empty() {
            c.read_tls(&mut buf.as_slice()).unwrap();
            c.process_new_packets()?;
        }
        if !c.is_handshaking() && !s.is_handshaking() {
            return Ok((tls::peer_identity(&s), tls::peer_identity(&c)));
        }
    }
    panic!("handshake did not finish in 20 flights");
}

fn store_with(authority: &Authority, who: &SpiffeId) -> Arc<CertStore> {
    let (issued, request) = leaf_for(authority, who);
    let store = CertStore::new(who.clone());
    let bundle = TrustBundle::from_pem(&issued.roots_pem).unwrap();
    store
        .update(&issued.chain_pem, request.key, bundle)
        .unwrap();
    store
}

#[test]
fn leaf_chains_through_the_node_ca_to_the_root() {
    let mesh = mesh();
    let who = id("spiffe://cluster.local/ns/shop/sa/cart");
    let (issued, _) = leaf_for(&mesh.node, &who);
    let chain = certs_from_pem(&issued.chain_pem).unwrap();
    assert_eq!(chain.len(), 2, "leaf + node CA; the root is not repeated");
    let roots = certs_from_pem(&issued.roots_pem).unwrap();
    assert_eq!(roots, vec![mesh.root.cert_der().clone()]);

    webpki_verify(&chain, &roots, SystemTime::now()).unwrap();
    let bundle = TrustBundle::from_pem(&issued.roots_pem).unwrap();
    let got = svid::verify_chain(
        &bundle,
        &chain[0],
        &chain[1..],
        unix(SystemTime::now()),
        Role::Server,
    )
    .unwrap();
    assert_eq!(got, who);

    // And through rustls, with the verifiers the proxy uses, both ways.
    let other = id("spiffe://cluster.local/ns/shop/sa/checkout");
    let server = store_with(&mesh.node, &who);
    let client = store_with(&mesh.node, &other);
    let (client_seen_by_server, server_seen_by_client) =
        handshake(&server, &client, ExpectedPeer::OneOf(vec![who.clone()])).unwrap();
    assert_eq!(client_seen_by_server, Some(other));
    assert_eq!(server_seen_by_client, Some(who));
}

#[test]
fn leaf_has_exactly_the_spiffe_san_and_workload_shape() {
    let mesh = mesh();
    let who = id("spiffe://cluster.local/ns/shop/sa/cart");
    let before = SystemTime::now();
    let (issued, request) = leaf_for(&mesh.node, &who);
    let chain = certs_from_pem(&issued.chain_pem).unwrap();
    let (_, leaf) = X509Certificate::from_der(&chain[0]).unwrap();

    let san = leaf.subject_alternative_name().unwrap().unwrap();
    let names: Vec<String> = san
        .value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::URI(u) => format!("URI:{u}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(names, vec![format!("URI:{who}")]);
    assert!(san.critical, "empty subject requires a critical SAN");
    assert_eq!(leaf.subject().iter().count(), 0);

    let bc = leaf.basic_constraints().unwrap().unwrap().value.clone();
    assert!(!bc.ca);
    let ku = *leaf.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && ku.key_encipherment() && !ku.key_cert_sign());
    let eku = leaf.extended_key_usage().unwrap().unwrap().value.clone();
    assert!(eku.server_auth && eku.client_auth && !eku.any);
    assert!(leaf.serial.bits() > 64, "random serial");
    assert_eq!(
        leaf.public_key().raw,
        request.key.public_key_der().as_slice()
    );

    let validity = svid::validity(&chain[0]).unwrap();
    let lifetime = validity
        .not_after
        .duration_since(validity.not_before)
        .unwrap();
    assert!(
        lifetime >= DEFAULT_WORKLOAD_TTL
            && lifetime <= DEFAULT_WORKLOAD_TTL + BACKDATE + Duration::from_secs(2)
    );
    assert!(validity.not_before <= before);
    assert_eq!(issued.not_after, validity.not_after);
}

#[test]
fn csr_for_another_identity_or_with_extra_names_is_refused() {
    let mesh = mesh();
    let authorised = id("spiffe://cluster.local/ns/shop/sa/cart");
    let asked = id("spiffe://cluster.local/ns/kube-system/sa/admin");
    let request = CertificateRequest::for_workload(&asked).unwrap();
    let err = mesh
        .node
        .sign_workload(&request.csr_pem, &authorised, DEFAULT_WORKLOAD_TTL)
        .unwrap_err();
    assert!(matches!(err, WorkloadError::WrongSan { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "CSR must have exactly one SAN, the URI `spiffe://cluster.local/ns/shop/sa/cart`; it has \
         [\"URI spiffe://cluster.local/ns/kube-system/sa/admin\"]"
    );

    // The right URI plus a DNS name.
    let mut params = rcgen::CertificateParams::new(vec!["evil.example".to_string()]).unwrap();
    params
        .subject_alt_names
        .push(rcgen::SanType::URI(authorised.uri().try_into().unwrap()));
    let request = CertificateRequest::with_params(&params).unwrap();
    let err = mesh
        .node
        .sign_workload(&request.csr_pem, &authorised, DEFAULT_WORKLOAD_TTL)
        .unwrap_err();
    assert!(err.to_string().contains("DNS evil.example"), "{err}");

    // No SAN at all.
    let request = CertificateRequest::with_params(&rcgen::CertificateParams::default()).unwrap();
    let err = mesh
        .node
        .sign_workload(&request.csr_pem, &authorised, DEFAULT_WORKLOAD_TTL)
        .unwrap_err();
    assert!(err.to_string().ends_with("it has []"), "{err}");
}

#[test]
fn tampered_csr_is_refused() {
    let mesh = mesh();
    let who = id("spiffe://cluster.local/ns/shop/sa/cart");
    let wanted = id("spiffe://cluster.local/ns/shop/sa/cars");
    let request = CertificateRequest::for_workload(&who).unwrap();
    let der = pem::parse(&request.csr_pem).unwrap().into_contents();
    // Rewrite the requested identity inside the signed part: `cart` -> `cars`.
    let needle = b"sa/cart";
    let at = der.windows(needle.len()).position(|w| w == needle).unwrap();
    let mut tampered = der.clone();
    tampered[at + needle.len() - 1] = b's';
    let tampered_pem = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", tampered));
    let err = mesh
        .node
        .sign_workload(&tampered_pem, &wanted, DEFAULT_WORKLOAD_TTL)
        .unwrap_err();
    assert!(matches!(err, WorkloadError::BadSignature), "{err}");

    let err = mesh
        .node
        .sign_workload("not a csr", &who, DEFAULT_WORKLOAD_TTL)
        .unwrap_err();
    assert!(matches!(err, WorkloadError::Unreadable(_)), "{err}");
}

#[test]
fn node_ca_is_a_named_leaf_only_ca() {
    let mesh = mesh();
    let root_authority = mesh.root.authority(None).unwrap();
    let request = node_ca_request("ip-10-0-1-7.ec2.internal").unwrap();
    let issued = root_authority
        .sign_node_ca(
            &request.csr_pem,
            "ip-10-0-1-7.ec2.internal",
            DEFAULT_NODE_CA_TTL,
        )
        .unwrap();
    let chain = certs_from_pem(&issued.chain_pem).unwrap();
    assert_eq!(chain.len(), 1, "signed by the root directly");
    let (_, cert) = X509Certificate::from_der(&chain[0]).unwrap();
    assert_eq!(
        cert.subject().to_string(),
        "OU=mizzen node CA, CN=ip-10-0-1-7.ec2.internal"
    );
    let bc = cert.basic_constraints().unwrap().unwrap().value.clone();
    assert!(bc.ca);
    assert_eq!(bc.path_len_constraint, Some(0));
    let ku = *cert.key_usage().unwrap().unwrap().value;
    assert!(ku.key_cert_sign() && ku.crl_sign());
    assert!(cert.extensions().iter().any(|e| matches!(
        e.parsed_extension(),
        ParsedExtension::AuthorityKeyIdentifier(_)
    )));
    let lifetime = issued.not_after.duration_since(issued.not_before).unwrap();
    assert!(
        lifetime >= DEFAULT_NODE_CA_TTL
            && lifetime <= DEFAULT_NODE_CA_TTL + BACKDATE + Duration::from_secs(2)
    );

    // A pathLen-0 node CA cannot make another CA.
    let again = node_ca_request("node-2").unwrap();
    let err = mesh
        .node
        .sign_node_ca(&again.csr_pem, "node-2", DEFAULT_NODE_CA_TTL)
        .unwrap_err();
    assert!(matches!(err, NodeCaError::CannotSignCa), "{err}");

    let err = root_authority
        .sign_node_ca(&again.csr_pem, "Node_2", DEFAULT_NODE_CA_TTL)
        .unwrap_err();
    assert!(matches!(err, NodeCaError::BadNodeName(_)), "{err}");
}

#[test]
fn lifetimes_are_capped_by_the_issuer() {
    let root = RootCa::generate("cluster.local", DEFAULT_ROOT_VALIDITY).unwrap();
    let node = node_authority(
        &root.authority(None).unwrap(),
        "node-1",
        Duration::from_secs(3600),
    );
    let (issued, _) = leaf_for(&node, &id("spiffe://cluster.local/ns/a/sa/b"));
    assert_eq!(issued.not_after, node.validity().not_after);

    let who = id("spiffe://cluster.local/ns/a/sa/b");
    let request = CertificateRequest::for_workload(&who).unwrap();
    let err = node
        .sign_workload_at(
            &request.csr_pem,
            &who,
            DEFAULT_WORKLOAD_TTL,
            node.validity().not_after,
        )
        .unwrap_err();
    assert!(
        matches!(err, WorkloadError::Ca(CaError::IssuerExpired(_))),
        "{err}"
    );
}

#[test]
fn leaf_from_another_root_does_not_verify() {
    let mesh = mesh();
    let stranger = RootCa::generate("cluster.local", DEFAULT_ROOT_VALIDITY).unwrap();
    let stranger_node = node_authority(
        &stranger.authority(None).unwrap(),
        "node-1",
        DEFAULT_NODE_CA_TTL,
    );
    let (issued, _) = leaf_for(&stranger_node, &id("spiffe://cluster.local/ns/a/sa/b"));
    let chain = certs_from_pem(&issued.chain_pem).unwrap();
    let err =
        webpki_verify(&chain, &[mesh.root.cert_der().clone()], SystemTime::now()).unwrap_err();
    assert_eq!(err, webpki::Error::UnknownIssuer);
    let err = svid::verify_chain(
        mesh.node.roots(),
        &chain[0],
        &chain[1..],
        unix(SystemTime::now()),
        Role::Client,
    )
    .unwrap_err();
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
}

#[test]
fn overlapping_roots_both_verify_during_rotation() {
    let old = RootCa::generate("cluster.local", DEFAULT_ROOT_VALIDITY).unwrap();
    let new = RootCa::generate("cluster.local", DEFAULT_ROOT_VALIDITY).unwrap();
    let both = TrustBundle::from_der([old.cert_der().clone(), new.cert_der().clone()]).unwrap();
    let old_node = node_authority(
        &old.authority(Some(both.clone())).unwrap(),
        "node-1",
        DEFAULT_NODE_CA_TTL,
    );
    let new_node = node_authority(
        &new.authority(Some(both.clone())).unwrap(),
        "node-2",
        DEFAULT_NODE_CA_TTL,
    );
    let a = id("spiffe://cluster.local/ns/a/sa/a");
    let b = id("spiffe://cluster.local/ns/b/sa/b");
    let server = store_with(&old_node, &a);
    let client = store_with(&new_node, &b);
    assert_eq!(server.bundle().unwrap().len(), 2);
    let (seen_by_server, seen_by_client) = handshake(&server, &client, ExpectedPeer::Any).unwrap();
    assert_eq!(seen_by_server, Some(b));
    assert_eq!(seen_by_client, Some(a));

    // After retirement the old root's chains are refused.
    let only_new = TrustBundle::from_der([new.cert_der().clone()]).unwrap();
    server.set_bundle(only_new.clone());
    client.set_bundle(only_new);
    let err = handshake(&server, &client, ExpectedPeer::Any).unwrap_err();
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");

    // A root authority refuses a bundle its own chain does not reach.
    let err = old
        .authority(Some(
            TrustBundle::from_der([new.cert_der().clone()]).unwrap(),
        ))
        .unwrap_err();
    assert!(matches!(err, CaError::BrokenChain { .. }), "{err}");
}

/// The user's own CA: root → user intermediate (ca-cert) → node CA → leaf.
#[test]
fn plug_in_ca_chain_verifies() {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };

    // What the user made with their own tooling.
    let root_key = KeyPair::generate().unwrap();
    let mut root_params = CertificateParams::default();
    root_params.distinguished_name = rcgen::DistinguishedName::new();
    root_params
        .distinguished_name
        .push(DnType::CommonName, "corp root");
    root_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    root_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let root_cert = root_params.self_signed(&root_key).unwrap();
    let root_issuer = Issuer::new(root_params, root_key);

    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = rcgen::DistinguishedName::new();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "corp mesh intermediate");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.use_authority_key_identifier_extension = true;
    let ca_cert = ca_params.signed_by(&ca_key, &root_issuer).unwrap();

    let plugin = PluginCa {
        ca_cert_pem: ca_cert.pem(),
        ca_key_pem: ca_key.serialize_pem(),
        root_cert_pem: root_cert.pem(),
        cert_chain_pem: Some(format!("{}{}", ca_cert.pem(), root_cert.pem())),
    };
    assert!(!format!("{plugin:?}").contains("PRIVATE KEY"));
    let authority = plugin.authority().unwrap();
    let node = node_authority(&authority, "node-1", DEFAULT_NODE_CA_TTL);
    let who = id("spiffe://cluster.local/ns/a/sa/b");
    let (issued, _) = leaf_for(&node, &who);
    let chain = certs_from_pem(&issued.chain_pem).unwrap();
    assert_eq!(chain.len(), 3, "leaf, node CA, user intermediate");
    assert_eq!(chain[2], *ca_cert.der());
    assert_eq!(issued.roots_pem, certs_to_pem([root_cert.der()]));
    webpki_verify(&chain, &[root_cert.der().clone()], SystemTime::now()).unwrap();

    // A key that is not ca-cert's is refused at load.
    let wrong = PluginCa {
        ca_key_pem: KeyPair::generate().unwrap().serialize_pem(),
        ..plugin
    };
    let err = wrong.authority().unwrap_err();
    assert_eq!(
        err.to_string(),
        "plug-in CA: plug-in CA: the private key does not belong to the CA certificate"
    );

    // An intermediate from another root is refused at load.
    let stranger = RootCa::generate("cluster.local", DEFAULT_ROOT_VALIDITY).unwrap();
    let unrelated = PluginCa {
        ca_cert_pem: ca_cert.pem(),
        ca_key_pem: ca_key.serialize_pem(),
        root_cert_pem: stranger.cert_pem(),
        cert_chain_pem: None,
    };
    let err = unrelated.authority().unwrap_err();
    assert!(
        err.to_string().contains("does not verify to its roots"),
        "{err}"
    );
}

#[test]
fn plug_in_ca_names_missing_files() {
    let mut data = std::collections::BTreeMap::new();
    data.insert("ca-cert.pem".to_string(), b"x".to_vec());
    let err = PluginCa::from_entries(&data).unwrap_err();
    assert_eq!(err.to_string(), "plug-in CA: `ca-key.pem` is missing");
}

#[test]
fn root_round_trips_through_pem_and_is_a_ca() {
    let root = RootCa::generate("example.org", DEFAULT_ROOT_VALIDITY).unwrap();
    assert!(!format!("{root:?}").contains("PRIVATE"));
    let loaded = RootCa::from_pem(&root.cert_pem(), &root.key_pem()).unwrap();
    assert_eq!(loaded.cert_der(), root.cert_der());
    let (_, cert) = X509Certificate::from_der(root.cert_der()).unwrap();
    assert!(cert.basic_constraints().unwrap().unwrap().value.ca);
    assert!(cert.subject().to_string().contains("O=example.org"));
    let ku = *cert.key_usage().unwrap().unwrap().value;
    assert!(ku.key_cert_sign() && ku.crl_sign());
    let v = root.validity();
    let years = v.not_after.duration_since(v.not_before).unwrap().as_secs() / (365 * 24 * 3600);
    assert_eq!(years, 10);
    // A key from another root does not load with this certificate.
    let other = RootCa::generate("example.org", DEFAULT_ROOT_VALIDITY).unwrap();
    let err = RootCa::from_pem(&root.cert_pem(), &other.key_pem()).unwrap_err();
    assert!(matches!(err, CaError::KeyMismatch { .. }), "{err}");
}
