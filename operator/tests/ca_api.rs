//! The CA's thin Kubernetes shells against kube's tower-test mock API server: each test states
//! the exact requests (method, path, body) the keeper or the signer makes and answers them.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{Method, StatusCode};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use mizzen_ca::root::{PLUGIN_CA_CERT, PLUGIN_CA_KEY, PLUGIN_ROOT_CERT};
use mizzen_ca::{Authority, RootCa, node_ca_request};
use mizzen_identity::TrustBundle;
use mizzen_identity::bundle::certs_from_pem;
use mizzen_operator::ca::keeper::{self, AuthorityRx, KeeperSettings, Outcome};
use mizzen_operator::ca::secret::{self, MeshCa, Step};
use mizzen_operator::ca::signer::{self, SignerSettings};
use serde_json::{Value, json};
use tokio::sync::watch;
use x509_parser::prelude::{FromDer, X509Certificate};

mod support;
use support::{Handle, expect, mock, next, reply};

const SECRETS: &str = "/api/v1/namespaces/mizzen-system/secrets";
const CSRS: &str = "/apis/certificates.k8s.io/v1/certificatesigningrequests";
const AGENT: &str = "system:serviceaccount:mizzen-system:mizzen-agent";

/// The keeper's two reads: no plug-in CA (`cacerts` is 404), then `mizzen-ca` as `stored`.
async fn reads_without_plugin(handle: &mut Handle, stored: Value) {
    expect(
        handle,
        Method::GET,
        &format!("{SECRETS}/cacerts"),
        StatusCode::NOT_FOUND,
        status(404, "NotFound"),
    )
    .await;
    expect(
        handle,
        Method::GET,
        &format!("{SECRETS}/mizzen-ca"),
        StatusCode::OK,
        stored,
    )
    .await;
}

fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": reason, "code": code, "message": reason})
}

fn text(v: &Value) -> String {
    let bytes: k8s_openapi::ByteString = serde_json::from_value(v.clone()).unwrap();
    String::from_utf8(bytes.0).unwrap()
}

// ---------------------------------------------------------------------------------------------
// The keeper

fn keeper_settings() -> KeeperSettings {
    KeeperSettings {
        period: Duration::from_secs(3600),
        ..KeeperSettings::new("mizzen-system", "cluster.local")
    }
}

/// `mizzen-ca` as the API server would return it.
fn stored_secret(ca: &MeshCa, resource_version: &str) -> Value {
    let mut secret = secret::new_secret("mizzen-system", ca);
    secret.metadata.resource_version = Some(resource_version.into());
    let mut v = serde_json::to_value(secret).unwrap();
    v["apiVersion"] = "v1".into();
    v["kind"] = "Secret".into();
    v
}

fn fresh_ca() -> MeshCa {
    MeshCa::first(&RootCa::generate("cluster.local", Duration::from_secs(365 * 86400)).unwrap())
}

/// A keeper task on a mock API, its leadership switch, and the authority it publishes.
struct Keeper {
    handle: Handle,
    authority: AuthorityRx,
    _leading: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn spawn_keeper(leading: bool) -> Keeper {
    let (client, handle) = mock();
    let (lead_tx, lead_rx) = watch::channel(leading);
    let (out, authority) = watch::channel(None);
    let task = tokio::spawn(keeper::keep_current(
        client,
        keeper_settings(),
        lead_rx,
        out,
    ));
    Keeper {
        handle,
        authority,
        _leading: lead_tx,
        task,
    }
}

async fn authority_of(rx: &mut AuthorityRx) -> Arc<Authority> {
    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(Option::is_some))
        .await
        .expect("an authority within 10 s")
        .unwrap()
        .clone()
        .unwrap()
}

#[tokio::test]
async fn first_start_creates_the_root_secret_and_publishes_its_authority() {
    let Keeper {
        mut handle,
        mut authority,
        task,
        _leading: _lead,
    } = spawn_keeper(true);
    let cacerts = format!("{SECRETS}/cacerts");
    let mizzen_ca = format!("{SECRETS}/mizzen-ca");
    expect(
        &mut handle,
        Method::GET,
        &cacerts,
        StatusCode::NOT_FOUND,
        status(404, "NotFound"),
    )
    .await;
    expect(
        &mut handle,
        Method::GET,
        &mizzen_ca,
        StatusCode::NOT_FOUND,
        status(404, "NotFound"),
    )
    .await;
    let (m, p, created, send) = next(&mut handle).await;
    assert_eq!((m, p.as_str()), (Method::POST, &*format!("{SECRETS}?")));
    reply(send, StatusCode::CREATED, &created);
    assert_eq!(created["metadata"]["name"], "mizzen-ca");
    assert_eq!(created["metadata"]["namespace"], "mizzen-system");
    assert_eq!(
        created["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "mizzen"
    );
    assert_eq!(created["type"], "Opaque");
    let mut keys: Vec<&String> = created["data"].as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["ca.crt", "ca.key", "roots.pem"]);
    assert!(text(&created["data"]["ca.key"]).contains("PRIVATE KEY"));

    let authority = authority_of(&mut authority).await;
    assert_eq!(
        authority.roots(),
        &TrustBundle::from_pem(&text(&created["data"]["roots.pem"])).unwrap()
    );
    task.abort();
}

#[tokio::test]
async fn losing_the_create_race_adopts_the_winners_root() {
    let Keeper {
        mut handle,
        mut authority,
        task,
        _leading: _lead,
    } = spawn_keeper(true);
    let theirs = fresh_ca();
    let mizzen_ca = format!("{SECRETS}/mizzen-ca");
    expect(
        &mut handle,
        Method::GET,
        &format!("{SECRETS}/cacerts"),
        StatusCode::NOT_FOUND,
        status(404, "NotFound"),
    )
    .await;
    expect(
        &mut handle,
        Method::GET,
        &mizzen_ca,
        StatusCode::NOT_FOUND,
        status(404, "NotFound"),
    )
    .await;
    let ours = expect(
        &mut handle,
        Method::POST,
        &format!("{SECRETS}?"),
        StatusCode::CONFLICT,
        status(409, "AlreadyExists"),
    )
    .await;
    expect(
        &mut handle,
        Method::GET,
        &mizzen_ca,
        StatusCode::OK,
        stored_secret(&theirs, "3"),
    )
    .await;
    let authority = authority_of(&mut authority).await;
    assert_eq!(authority.roots().to_pem(), theirs.roots_pem());
    assert_ne!(text(&ours["data"]["ca.crt"]), theirs.roots_pem());
    task.abort();
}

/// Runs one keeper pass at `now` in the background, so the test can answer its requests.
fn spawn_pass(
    client: Client,
    now: SystemTime,
) -> tokio::task::JoinHandle<Result<keeper::Pass, keeper::KeeperError>> {
    tokio::spawn(async move {
        let api: Api<Secret> = Api::namespaced(client, "mizzen-system");
        keeper::check_once(&api, &keeper_settings(), now, None).await
    })
}

#[tokio::test]
async fn a_root_in_its_last_fifth_is_rotated_with_the_read_resource_version() {
    let (client, mut handle) = mock();
    let ca = fresh_ca();
    let late = ca.signing_validity().not_after - Duration::from_secs(30 * 86400);
    let pass = spawn_pass(client, late);
    reads_without_plugin(&mut handle, stored_secret(&ca, "7")).await;
    let (m, p, replaced, send) = next(&mut handle).await;
    assert_eq!(
        (m, p.as_str()),
        (Method::PUT, &*format!("{SECRETS}/mizzen-ca?"))
    );
    reply(send, StatusCode::OK, &replaced);
    assert_eq!(replaced["metadata"]["resourceVersion"], "7");
    assert_eq!(
        text(&replaced["data"]["ca.crt"]),
        text(&stored_secret(&ca, "7")["data"]["ca.crt"])
    );
    assert!(replaced["data"]["next.crt"].is_string() && replaced["data"]["next.key"].is_string());
    assert_eq!(
        certs_from_pem(&text(&replaced["data"]["roots.pem"]))
            .unwrap()
            .len(),
        2
    );

    let pass = pass.await.unwrap().unwrap();
    assert_eq!(pass.outcome, Outcome::Updated(vec![Step::Published]));
    let authority = pass.authority.expect("a new bundle rebuilds the authority");
    assert_eq!(authority.roots().len(), 2);
}

/// Reads `mizzen-ca` (current, so nothing is written) in a pass that last saw `last`.
async fn current_pass(ca: &MeshCa, last: Option<secret::SecretData>) -> keeper::Pass {
    let (client, mut handle) = mock();
    let pass = tokio::spawn(async move {
        let api: Api<Secret> = Api::namespaced(client, "mizzen-system");
        keeper::check_once(&api, &keeper_settings(), SystemTime::now(), last.as_ref()).await
    });
    reads_without_plugin(&mut handle, stored_secret(ca, "4")).await;
    pass.await.unwrap().unwrap()
}

#[tokio::test]
async fn an_unchanged_secret_does_not_rebuild_the_authority() {
    let ca = fresh_ca();
    let first = current_pass(&ca, None).await;
    assert_eq!(first.outcome, Outcome::Current);
    assert!(first.authority.is_some(), "the first pass loads it");
    let again = current_pass(&ca, Some(first.source.clone())).await;
    assert_eq!(again.outcome, Outcome::Current);
    assert!(again.authority.is_none(), "same Secret, same authority");
    assert_eq!(again.source, first.source);
}

#[tokio::test]
async fn a_conflicting_rotation_writes_nothing_more_and_keeps_the_authority() {
    let (client, mut handle) = mock();
    let ca = fresh_ca();
    let late = ca.signing_validity().not_after - Duration::from_secs(30 * 86400);
    let pass = spawn_pass(client, late);
    reads_without_plugin(&mut handle, stored_secret(&ca, "7")).await;
    expect(
        &mut handle,
        Method::PUT,
        &format!("{SECRETS}/mizzen-ca?"),
        StatusCode::CONFLICT,
        status(409, "Conflict"),
    )
    .await;
    let pass = pass.await.unwrap().unwrap();
    assert_eq!(pass.outcome, Outcome::Conflict);
    assert!(pass.authority.is_none());
}

#[tokio::test]
async fn a_plugged_in_ca_is_read_and_nothing_is_written() {
    let (client, mut handle) = mock();
    let user = RootCa::generate("example.com", Duration::from_secs(86400)).unwrap();
    let cacerts = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "cacerts", "namespace": "mizzen-system", "resourceVersion": "1"},
        "data": {
            PLUGIN_CA_CERT: serde_json::to_value(k8s_openapi::ByteString(user.cert_pem().into_bytes())).unwrap(),
            PLUGIN_CA_KEY: serde_json::to_value(k8s_openapi::ByteString(user.key_pem().into_bytes())).unwrap(),
            PLUGIN_ROOT_CERT: serde_json::to_value(k8s_openapi::ByteString(user.cert_pem().into_bytes())).unwrap(),
        }
    });
    // Far past the user's root's last fifth: still only read.
    let pass = spawn_pass(client, SystemTime::now() + Duration::from_secs(80000));
    expect(
        &mut handle,
        Method::GET,
        &format!("{SECRETS}/cacerts"),
        StatusCode::OK,
        cacerts,
    )
    .await;
    let pass = pass.await.unwrap().unwrap();
    assert_eq!(pass.outcome, Outcome::Plugin);
    assert_eq!(pass.authority.unwrap().roots().to_pem(), user.cert_pem());
}

/// A follower never reads or writes the CA Secrets.
#[tokio::test(start_paused = true)]
async fn a_follower_keeper_sends_nothing() {
    let Keeper {
        mut handle,
        authority,
        task,
        _leading: _lead,
    } = spawn_keeper(false);
    let seen = tokio::time::timeout(Duration::from_secs(3 * 3600), handle.next_request()).await;
    assert!(seen.is_err(), "a follower sent a request");
    assert!(authority.borrow().is_none());
    task.abort();
}

// ---------------------------------------------------------------------------------------------
// The signer

fn csr_json(name: &str, rv: &str, node: &str, cn: &str) -> (Value, mizzen_identity::PrivateKey) {
    let request = node_ca_request(cn).unwrap();
    let v = json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": name, "resourceVersion": rv, "uid": format!("uid-{name}")},
        "spec": {
            "signerName": "mizzen.io/node-ca",
            "request": serde_json::to_value(k8s_openapi::ByteString(request.csr_pem.into_bytes())).unwrap(),
            "usages": ["digital signature", "cert sign"],
            "expirationSeconds": 7200,
            "username": AGENT,
            "groups": ["system:serviceaccounts", "system:authenticated"],
            "extra": {"authentication.kubernetes.io/node-name": [node]},
        },
        "status": {}
    });
    (v, request.key)
}

fn csr_list(items: Vec<Value>) -> Value {
    json!({"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequestList", "metadata": {"resourceVersion": "20"}, "items": items})
}

const LIST: &str = "/apis/certificates.k8s.io/v1/certificatesigningrequests?&fieldSelector=spec.signerName%3Dmizzen.io%2Fnode-ca";
const OUR_SIGNER: &str = "fieldSelector=spec.signerName%3Dmizzen.io%2Fnode-ca";

fn spawn_signer(
    leading: bool,
    authority: Option<Authority>,
) -> (Handle, watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let (client, handle) = mock();
    let (lead_tx, lead_rx) = watch::channel(leading);
    let (auth_tx, auth_rx) = watch::channel(authority.map(Arc::new));
    let task = tokio::spawn(async move {
        signer::run(
            client,
            SignerSettings::new("mizzen-system"),
            lead_rx,
            auth_rx,
        )
        .await;
        drop(auth_tx);
    });
    (handle, lead_tx, task)
}

#[tokio::test]
async fn the_leader_signs_the_right_nodes_request_and_denies_a_wrong_one() {
    let root = RootCa::generate("cluster.local", Duration::from_secs(365 * 86400)).unwrap();
    let roots = TrustBundle::from_pem(&root.cert_pem()).unwrap();
    let (good, good_key) = csr_json("a-node-a", "5", "node-a", "node-a");
    // The agent on node-b asks for node-a's CA.
    let (bad, _) = csr_json("b-node-b", "6", "node-b", "node-a");
    let (mut handle, _lead, task) = spawn_signer(true, Some(root.authority(None).unwrap()));

    let (m, list_path, _, send) = next(&mut handle).await;
    assert_eq!(m, Method::GET);
    assert!(list_path.starts_with(LIST), "{list_path}");
    assert!(!list_path.contains("watch=true"), "{list_path}");
    reply(
        send,
        StatusCode::OK,
        &csr_list(vec![good.clone(), bad.clone()]),
    );

    // The right request: approved first ...
    let (m, p, approved, send) = next(&mut handle).await;
    assert_eq!(
        (m, p.as_str()),
        (Method::PUT, &*format!("{CSRS}/a-node-a/approval?"))
    );
    let mut answer = approved.clone();
    answer["metadata"]["resourceVersion"] = "21".into();
    reply(send, StatusCode::OK, &answer);
    assert_eq!(approved["metadata"]["resourceVersion"], "5");
    assert_eq!(
        approved["spec"], good["spec"],
        "the spec is sent back untouched"
    );
    let conditions = approved["status"]["conditions"].as_array().unwrap();
    assert_eq!(conditions.len(), 1);
    assert_eq!(conditions[0]["type"], "Approved");
    assert_eq!(conditions[0]["status"], "True");
    assert_eq!(conditions[0]["reason"], "MizzenNodeCA");
    assert!(approved["status"].get("certificate").is_none());

    // ... then signed through /status, on top of the approved version.
    let (m, p, signed, send) = next(&mut handle).await;
    assert_eq!(
        (m, p.as_str()),
        (Method::PUT, &*format!("{CSRS}/a-node-a/status?"))
    );
    reply(send, StatusCode::OK, &signed);
    assert_eq!(signed["metadata"]["resourceVersion"], "21");
    assert_eq!(signed["status"]["conditions"][0]["type"], "Approved");
    let chain = text(&signed["status"]["certificate"]);
    let certs = certs_from_pem(&chain).unwrap();
    assert_eq!(
        certs.len(),
        1,
        "a root signs directly: the chain is the node CA alone"
    );
    let (_, cert) = X509Certificate::from_der(&certs[0]).unwrap();
    let cn: Vec<&str> = cert
        .subject()
        .iter_common_name()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(cn, ["node-a"]);
    let lifetime = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
    assert!(
        (7200..=7260).contains(&lifetime),
        "asked for 2 h, got {lifetime} s"
    );
    // The agent can use it with the key it kept: it verifies to the root.
    Authority::from_node_ca(&chain, good_key, roots).expect("a working node CA");

    // The wrong request: denied, saying why, nothing signed.
    let (m, p, denied, send) = next(&mut handle).await;
    assert_eq!(
        (m, p.as_str()),
        (Method::PUT, &*format!("{CSRS}/b-node-b/approval?"))
    );
    reply(send, StatusCode::OK, &denied);
    assert_eq!(denied["metadata"]["resourceVersion"], "6");
    let conditions = denied["status"]["conditions"].as_array().unwrap();
    assert_eq!(conditions.len(), 1);
    assert_eq!(conditions[0]["type"], "Denied");
    assert_eq!(conditions[0]["reason"], "MizzenNodeCA");
    assert_eq!(
        conditions[0]["message"],
        "the CSR's subject CN is `node-a`, but the requesting agent runs on node `node-b`"
    );
    assert!(denied["status"].get("certificate").is_none());

    // Then it only watches: no further writes.
    let (m, p, _, _watch) = next(&mut handle).await;
    assert_eq!(m, Method::GET);
    assert!(p.starts_with(&format!("{CSRS}?")), "{p}");
    assert!(
        p.contains(OUR_SIGNER) && p.contains("watch=true") && p.contains("resourceVersion=20"),
        "a watch of this signer's requests from the listed version: {p}"
    );
    let more = tokio::time::timeout(Duration::from_millis(300), handle.next_request()).await;
    assert!(more.is_err(), "an unexpected request after the watch");
    task.abort();
}

#[tokio::test]
async fn a_pending_request_waits_for_the_authority() {
    let (good, _) = csr_json("a-node-a", "5", "node-a", "node-a");
    let (client, mut handle) = mock();
    let (_lead_tx, lead_rx) = watch::channel(true);
    let (auth_tx, auth_rx) = watch::channel(None);
    let task = tokio::spawn(signer::run(
        client,
        SignerSettings::new("mizzen-system"),
        lead_rx,
        auth_rx,
    ));
    let (_, p, _, send) = next(&mut handle).await;
    assert!(p.starts_with(LIST), "{p}");
    reply(send, StatusCode::OK, &csr_list(vec![good]));
    // No authority: nothing is approved; the watch starts.
    let (_, p, _, _watch) = next(&mut handle).await;
    assert!(p.contains("watch=true"), "{p}");
    // Once the keeper publishes one, the request is approved.
    let root = RootCa::generate("cluster.local", Duration::from_secs(86400)).unwrap();
    auth_tx.send_replace(Some(Arc::new(root.authority(None).unwrap())));
    let (m, p, _, _send) = next(&mut handle).await;
    assert_eq!(
        (m, p.as_str()),
        (Method::PUT, &*format!("{CSRS}/a-node-a/approval?"))
    );
    task.abort();
}

/// A follower does not even list the requests, so it cannot write anything.
#[tokio::test(start_paused = true)]
async fn a_follower_signer_sends_nothing() {
    let root = RootCa::generate("cluster.local", Duration::from_secs(86400)).unwrap();
    let (mut handle, _lead, task) = spawn_signer(false, Some(root.authority(None).unwrap()));
    let seen = tokio::time::timeout(Duration::from_secs(3600), handle.next_request()).await;
    assert!(seen.is_err(), "a follower sent a request");
    task.abort();
}

#[tokio::test]
async fn losing_leadership_stops_the_watch_and_the_writes() {
    let (good, _) = csr_json("a-node-a", "5", "node-a", "node-a");
    let root = RootCa::generate("cluster.local", Duration::from_secs(86400)).unwrap();
    let (mut handle, lead, task) = spawn_signer(true, Some(root.authority(None).unwrap()));
    let (_, p, _, send) = next(&mut handle).await;
    assert!(p.starts_with(LIST), "{p}");
    // Leadership is lost while the list is in flight.
    lead.send_replace(false);
    reply(send, StatusCode::OK, &csr_list(vec![good]));
    let more = tokio::time::timeout(Duration::from_millis(500), handle.next_request()).await;
    assert!(more.is_err(), "a former leader sent a request");
    task.abort();
}

/// `pem` with one byte of the CSR's signature flipped: it still parses, names the same node,
/// but does not prove possession of its key.
fn tampered(pem: &str) -> String {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    let mut der = block.contents;
    let last = der.len() - 1;
    der[last] ^= 0x01;
    let b64 = serde_json::to_value(k8s_openapi::ByteString(der)).unwrap();
    let b64 = b64.as_str().unwrap();
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        lines.join("\n")
    )
}

#[tokio::test]
async fn a_csr_with_a_bad_signature_is_denied_or_failed_never_signed() {
    let root = RootCa::generate("cluster.local", Duration::from_secs(86400)).unwrap();
    let (mut v, _) = csr_json("a-node-a", "5", "node-a", "node-a");
    let good_pem = text(&v["spec"]["request"]);
    v["spec"]["request"] =
        serde_json::to_value(k8s_openapi::ByteString(tampered(&good_pem).into_bytes())).unwrap();
    let pending: k8s_openapi::api::certificates::v1::CertificateSigningRequest =
        serde_json::from_value(v.clone()).unwrap();
    let mut approved = pending.clone();
    approved.status = serde_json::from_value(
        json!({"conditions": [{"type": "Approved", "status": "True", "reason": "ByHand"}]}),
    )
    .unwrap();

    for (csr, path, kind) in [
        (pending, format!("{CSRS}/a-node-a/approval?"), "Denied"),
        (approved, format!("{CSRS}/a-node-a/status?"), "Failed"),
    ] {
        let (client, mut handle) = mock();
        let settings = SignerSettings::new("mizzen-system");
        let root_authority = root.authority(None).unwrap();
        let task = tokio::spawn(async move {
            let api = Api::all(client);
            signer::act(&api, &csr, &settings, Some(&root_authority)).await
        });
        let body = expect(&mut handle, Method::PUT, &path, StatusCode::OK, v.clone()).await;
        let last = body["status"]["conditions"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .clone();
        assert_eq!(last["type"], kind);
        assert_eq!(last["reason"], "MizzenNodeCA");
        let message = last["message"].as_str().unwrap();
        assert!(message.contains("signature does not verify"), "{message}");
        assert!(body["status"].get("certificate").is_none());
        let acted = task.await.unwrap().unwrap();
        match (kind, acted) {
            ("Denied", signer::Acted::Denied { reason })
            | ("Failed", signer::Acted::Failed { reason }) => {
                assert_eq!(reason, message);
            }
            (kind, acted) => panic!("expected {kind}, got {acted:?}"),
        }
    }
}
