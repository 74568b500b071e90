use std::time::{Duration, SystemTime};

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};

use super::*;

const NS: &str = "mizzen-system";
const DAY: Duration = Duration::from_secs(24 * 3600);

fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn dns() -> String {
    dns_name(NS)
}

fn bundles(mutating: Option<&[u8]>, validating: Option<&[u8]>) -> Vec<WebhookBundle> {
    vec![
        WebhookBundle {
            kind: ConfigKind::Mutating,
            config: MUTATING_CONFIG.into(),
            webhook: "sidecar-injector.mizzen.io".into(),
            ca_bundle: mutating.map(<[u8]>::to_vec),
        },
        WebhookBundle {
            kind: ConfigKind::Validating,
            config: VALIDATING_CONFIG.into(),
            webhook: "validation.mizzen.io".into(),
            ca_bundle: validating.map(<[u8]>::to_vec),
        },
    ]
}

fn leaf_of(data: &BTreeMap<String, Vec<u8>>) -> x509_parser::certificate::X509Certificate<'static> {
    let der = CertificateDer::from_pem_slice(&data[TLS_CRT])
        .unwrap()
        .to_vec();
    let leaked: &'static [u8] = Box::leak(der.into_boxed_slice());
    x509_parser::parse_x509_certificate(leaked).unwrap().1
}

#[test]
fn issues_a_ca_and_a_serving_certificate_when_the_secret_is_missing() {
    let plan = plan(
        &Observed {
            secret: None,
            bundles: bundles(None, None),
        },
        &dns(),
        t0(),
    )
    .unwrap();
    assert_eq!(
        plan.renewal.as_deref(),
        Some("the Secret mizzen-webhook-tls does not exist")
    );
    let data = plan.secret.clone().unwrap();
    assert_eq!(data.keys().collect::<Vec<_>>(), [CA_CRT, TLS_CRT, TLS_KEY]);
    let leaf = leaf_of(&data);
    let sans: Vec<String> = leaf
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(sans, ["DNSName(mizzen-webhook.mizzen-system.svc)"]);
    assert_eq!(
        leaf.validity().not_after.timestamp(),
        unix(t0() + LIFETIME) as i64
    );
    // The bundle is the new CA, and both configurations get it.
    assert_eq!(plan.ca_bundle, data[CA_CRT]);
    assert_eq!(
        plan.patches,
        vec![
            BundlePatch {
                kind: ConfigKind::Mutating,
                config: MUTATING_CONFIG.into(),
                webhooks: vec!["sidecar-injector.mizzen.io".into()],
                ca_bundle: data[CA_CRT].clone(),
            },
            BundlePatch {
                kind: ConfigKind::Validating,
                config: VALIDATING_CONFIG.into(),
                webhooks: vec!["validation.mizzen.io".into()],
                ca_bundle: data[CA_CRT].clone(),
            },
        ]
    );
    // What it issued is what a webhook can serve and the API server verify.
    assert_eq!(
        assess(
            Some(&data),
            &dns(),
            t0(),
            &Arc::new(rustls::crypto::ring::default_provider())
        ),
        None
    );
}

#[test]
fn keeps_a_good_certificate_and_only_fixes_bundles() {
    let data = issue(&dns(), t0()).unwrap();
    let ca = data[CA_CRT].clone();
    // Everything in place: nothing to do.
    let observed = Observed {
        secret: Some(data.clone()),
        bundles: bundles(Some(&ca), Some(&ca)),
    };
    let p = plan(&observed, &dns(), t0() + 100 * DAY).unwrap();
    assert!(p.is_empty(), "{p:?}");
    assert_eq!(p.renewal, None);
    // A webhook that lost its bundle (a re-applied manifest) gets it back; nothing else moves.
    let observed = Observed {
        secret: Some(data.clone()),
        bundles: bundles(Some(&ca), None),
    };
    let p = plan(&observed, &dns(), t0() + 100 * DAY).unwrap();
    assert_eq!(p.secret, None);
    assert_eq!(p.patches.len(), 1);
    assert_eq!(p.patches[0].config, VALIDATING_CONFIG);
    assert_eq!(p.patches[0].ca_bundle, ca);
}

#[test]
fn renews_past_two_thirds_of_its_life_and_bundles_both_cas() {
    let old = issue(&dns(), t0()).unwrap();
    let old_ca = old[CA_CRT].clone();
    let observed = Observed {
        secret: Some(old.clone()),
        bundles: bundles(Some(&old_ca), Some(&old_ca)),
    };
    // Just before two thirds: kept.
    assert!(
        plan(&observed, &dns(), t0() + 242 * DAY)
            .unwrap()
            .is_empty()
    );
    // Past it: renewed, and the bundle carries the new CA then the old one.
    let now = t0() + 244 * DAY;
    let p = plan(&observed, &dns(), now).unwrap();
    assert!(
        p.renewal
            .as_deref()
            .unwrap()
            .starts_with("the certificate is past two thirds of its life"),
        "{:?}",
        p.renewal
    );
    let new = p.secret.clone().unwrap();
    assert_ne!(new[CA_CRT], old_ca);
    let mut both = new[CA_CRT].clone();
    both.extend_from_slice(&old_ca);
    assert_eq!(p.ca_bundle, both);
    assert_eq!(p.patches.len(), 2);

    // Next round, with the new Secret written and both CAs in the bundles: stable.
    let observed = Observed {
        secret: Some(new.clone()),
        bundles: bundles(Some(&both), Some(&both)),
    };
    assert!(plan(&observed, &dns(), now + DAY).unwrap().is_empty());
    // Once the old CA has expired it leaves the bundle.
    let later = t0() + LIFETIME + DAY;
    let p = plan(&observed, &dns(), later).unwrap();
    assert_eq!(p.secret, None);
    assert_eq!(p.ca_bundle, new[CA_CRT]);
    assert_eq!(p.patches.len(), 2);
}

#[test]
fn replaces_unusable_or_misnamed_secrets() {
    let good = issue(&dns(), t0()).unwrap();
    let other = issue("somewhere-else.default.svc", t0()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let reason = |data: &BTreeMap<String, Vec<u8>>| {
        assess(Some(data), &dns(), t0() + DAY, &provider).unwrap()
    };

    assert!(
        reason(&other).contains("does not verify for mizzen-webhook.mizzen-system.svc"),
        "{}",
        reason(&other)
    );
    let mut swapped = good.clone();
    swapped.insert(TLS_KEY.into(), other[TLS_KEY].clone());
    assert!(
        reason(&swapped).contains("tls.key does not match tls.crt"),
        "{}",
        reason(&swapped)
    );
    let mut foreign_ca = good.clone();
    foreign_ca.insert(CA_CRT.into(), other[CA_CRT].clone());
    assert!(
        reason(&foreign_ca).contains("does not verify"),
        "{}",
        reason(&foreign_ca)
    );
    let mut missing = good.clone();
    missing.remove(CA_CRT);
    assert_eq!(
        reason(&missing),
        "the Secret mizzen-webhook-tls is unusable: the Secret has no ca.crt"
    );
    let mut garbage = good.clone();
    garbage.insert(TLS_CRT.into(), b"garbage".to_vec());
    assert_eq!(
        reason(&garbage),
        "the Secret mizzen-webhook-tls is unusable: tls.crt holds no certificate"
    );
    // Expired.
    assert!(
        assess(Some(&good), &dns(), t0() + LIFETIME + DAY, &provider)
            .unwrap()
            .contains("does not verify")
    );
    // The plan for an unusable Secret issues a fresh pair; nothing of the old CA is kept when
    // it is not a valid CA.
    let observed = Observed {
        secret: Some(garbage),
        bundles: bundles(None, None),
    };
    let p = plan(&observed, &dns(), t0() + DAY).unwrap();
    let new = p.secret.unwrap();
    let mut both = new[CA_CRT].clone();
    both.extend_from_slice(&good[CA_CRT]);
    assert_eq!(
        p.ca_bundle, both,
        "the old CA is still valid and still in the Secret: kept"
    );
}

#[test]
fn the_bundle_patch_merges_by_webhook_name() {
    let body = bundle_patch_body(&BundlePatch {
        kind: ConfigKind::Mutating,
        config: MUTATING_CONFIG.into(),
        webhooks: vec!["sidecar-injector.mizzen.io".into()],
        ca_bundle: b"PEM".to_vec(),
    });
    assert_eq!(
        body,
        json!({"webhooks": [{"name": "sidecar-injector.mizzen.io", "clientConfig": {"caBundle": "UEVN"}}]})
    );
}

// The thin shell, against kube's mock API server: the exact requests and their order.

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn respond(send: tower_test::mock::SendResponse<Response<Body>>, status: StatusCode, body: Value) {
    send.send_response(
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap(),
    );
}

fn not_found(name: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
           "message": format!("\"{name}\" not found")})
}

fn webhook_config(kind: &str, name: &str, webhook: &str, bundle: Option<&[u8]>) -> Value {
    let mut client_config =
        json!({"service": {"name": "mizzen-webhook", "namespace": NS, "path": "/x", "port": 443}});
    if let Some(b) = bundle {
        client_config["caBundle"] = serde_json::to_value(ByteString(b.to_vec())).unwrap();
    }
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": kind,
        "metadata": {"name": name, "resourceVersion": "7"},
        "webhooks": [{"name": webhook, "clientConfig": client_config, "sideEffects": "None", "admissionReviewVersions": ["v1"]}]
    })
}

async fn expect(
    handle: &mut Handle,
    method: Method,
    path: &str,
) -> (Value, tower_test::mock::SendResponse<Response<Body>>) {
    let (request, send) = handle
        .next_request()
        .await
        .expect("the client made no further request");
    assert_eq!(request.method(), method, "{path}");
    assert_eq!(request.uri().path(), path);
    let content_type = request
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = request.into_body().collect_bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    if method == Method::PATCH {
        assert_eq!(
            content_type.as_deref(),
            Some("application/strategic-merge-patch+json")
        );
    }
    (body, send)
}

const SECRET_PATH: &str = "/api/v1/namespaces/mizzen-system/secrets/mizzen-webhook-tls";
const MUTATING_PATH: &str =
    "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/mizzen-sidecar-injector";
const VALIDATING_PATH: &str =
    "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/mizzen-validator";

fn decode(b64: &Value) -> Vec<u8> {
    serde_json::from_value::<ByteString>(b64.clone()).unwrap().0
}

#[tokio::test]
async fn ensure_creates_the_secret_after_patching_both_bundles() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let server = tokio::spawn(async move {
        let (_, send) = expect(&mut handle, Method::GET, SECRET_PATH).await;
        respond(send, StatusCode::NOT_FOUND, not_found(SECRET_NAME));
        let (_, send) = expect(&mut handle, Method::GET, MUTATING_PATH).await;
        respond(
            send,
            StatusCode::OK,
            webhook_config(
                "MutatingWebhookConfiguration",
                MUTATING_CONFIG,
                "sidecar-injector.mizzen.io",
                None,
            ),
        );
        let (_, send) = expect(&mut handle, Method::GET, VALIDATING_PATH).await;
        respond(
            send,
            StatusCode::OK,
            webhook_config(
                "ValidatingWebhookConfiguration",
                VALIDATING_CONFIG,
                "validation.mizzen.io",
                None,
            ),
        );

        let (patch, send) = expect(&mut handle, Method::PATCH, MUTATING_PATH).await;
        let webhooks = patch["webhooks"].as_array().unwrap();
        assert_eq!(webhooks.len(), 1);
        assert_eq!(webhooks[0]["name"], "sidecar-injector.mizzen.io");
        assert_eq!(
            webhooks[0].as_object().unwrap().len(),
            2,
            "only name and clientConfig: {patch}"
        );
        let bundle = decode(&webhooks[0]["clientConfig"]["caBundle"]);
        respond(
            send,
            StatusCode::OK,
            webhook_config(
                "MutatingWebhookConfiguration",
                MUTATING_CONFIG,
                "sidecar-injector.mizzen.io",
                Some(&bundle),
            ),
        );
        let (patch, send) = expect(&mut handle, Method::PATCH, VALIDATING_PATH).await;
        assert_eq!(patch["webhooks"][0]["name"], "validation.mizzen.io");
        assert_eq!(
            decode(&patch["webhooks"][0]["clientConfig"]["caBundle"]),
            bundle
        );
        respond(
            send,
            StatusCode::OK,
            webhook_config(
                "ValidatingWebhookConfiguration",
                VALIDATING_CONFIG,
                "validation.mizzen.io",
                Some(&bundle),
            ),
        );

        let (secret, send) = expect(
            &mut handle,
            Method::POST,
            "/api/v1/namespaces/mizzen-system/secrets",
        )
        .await;
        assert_eq!(secret["metadata"]["name"], SECRET_NAME);
        assert_eq!(secret["metadata"]["namespace"], NS);
        assert_eq!(secret["type"], "kubernetes.io/tls");
        assert_eq!(
            decode(&secret["data"]["ca.crt"]),
            bundle,
            "the bundle is the Secret's CA"
        );
        let data: BTreeMap<String, Vec<u8>> = [TLS_CRT, TLS_KEY, CA_CRT]
            .iter()
            .map(|k| (k.to_string(), decode(&secret["data"][k])))
            .collect();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        assert_eq!(
            assess(Some(&data), &dns(), SystemTime::now(), &provider),
            None
        );
        respond(send, StatusCode::CREATED, secret);
        assert!(
            handle.next_request().await.is_none(),
            "no request after the Secret"
        );
    });
    let applied = ensure(client, NS).await.unwrap();
    assert_eq!(
        applied.renewal.as_deref(),
        Some("the Secret mizzen-webhook-tls does not exist")
    );
    assert_eq!(applied.patched, [MUTATING_CONFIG, VALIDATING_CONFIG]);
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap();
}

fn secret_json(data: &BTreeMap<String, Vec<u8>>) -> Value {
    let mut s = serde_json::to_value(secret_object(NS, data, Some("41".into()))).unwrap();
    s["apiVersion"] = json!("v1");
    s["kind"] = json!("Secret");
    s
}

#[tokio::test]
async fn ensure_does_nothing_when_all_is_in_place() {
    let data = issue(&dns(), SystemTime::now()).unwrap();
    let ca = data[CA_CRT].clone();
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let server = tokio::spawn(async move {
        let (_, send) = expect(&mut handle, Method::GET, SECRET_PATH).await;
        respond(send, StatusCode::OK, secret_json(&data));
        let (_, send) = expect(&mut handle, Method::GET, MUTATING_PATH).await;
        respond(
            send,
            StatusCode::OK,
            webhook_config(
                "MutatingWebhookConfiguration",
                MUTATING_CONFIG,
                "sidecar-injector.mizzen.io",
                Some(&ca),
            ),
        );
        let (_, send) = expect(&mut handle, Method::GET, VALIDATING_PATH).await;
        respond(send, StatusCode::NOT_FOUND, not_found(VALIDATING_CONFIG));
        assert!(handle.next_request().await.is_none(), "nothing is written");
    });
    let applied = ensure(client, NS).await.unwrap();
    assert_eq!(applied, Applied::default());
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn ensure_replaces_an_expiring_secret_at_the_version_it_read() {
    let old = issue(&dns(), SystemTime::now() - 300 * DAY).unwrap();
    let old_ca = old[CA_CRT].clone();
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let server = tokio::spawn(async move {
        let (_, send) = expect(&mut handle, Method::GET, SECRET_PATH).await;
        respond(send, StatusCode::OK, secret_json(&old));
        let (_, send) = expect(&mut handle, Method::GET, MUTATING_PATH).await;
        respond(
            send,
            StatusCode::OK,
            webhook_config(
                "MutatingWebhookConfiguration",
                MUTATING_CONFIG,
                "sidecar-injector.mizzen.io",
                Some(&old_ca),
            ),
        );
        let (_, send) = expect(&mut handle, Method::GET, VALIDATING_PATH).await;
        respond(
            send,
            StatusCode::OK,
            webhook_config(
                "ValidatingWebhookConfiguration",
                VALIDATING_CONFIG,
                "validation.mizzen.io",
                Some(&old_ca),
            ),
        );
        let mut bundles = Vec::new();
        for (path, kind, name) in [
            (
                MUTATING_PATH,
                "MutatingWebhookConfiguration",
                MUTATING_CONFIG,
            ),
            (
                VALIDATING_PATH,
                "ValidatingWebhookConfiguration",
                VALIDATING_CONFIG,
            ),
        ] {
            let (patch, send) = expect(&mut handle, Method::PATCH, path).await;
            let bundle = decode(&patch["webhooks"][0]["clientConfig"]["caBundle"]);
            respond(
                send,
                StatusCode::OK,
                webhook_config(kind, name, "w", Some(&bundle)),
            );
            bundles.push(bundle);
        }
        let (secret, send) = expect(&mut handle, Method::PUT, SECRET_PATH).await;
        assert_eq!(secret["metadata"]["resourceVersion"], "41");
        let new_ca = decode(&secret["data"]["ca.crt"]);
        let mut both = new_ca.clone();
        both.extend_from_slice(&old_ca);
        assert_eq!(
            bundles,
            [both.clone(), both],
            "new CA first, the old one kept"
        );
        respond(send, StatusCode::OK, secret);
        assert!(handle.next_request().await.is_none());
    });
    let applied = ensure(client, NS).await.unwrap();
    assert!(
        applied
            .renewal
            .unwrap()
            .starts_with("the certificate is past two thirds of its life")
    );
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn ensure_reports_api_errors() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let server = tokio::spawn(async move {
        let (_, send) = expect(&mut handle, Method::GET, SECRET_PATH).await;
        respond(
            send,
            StatusCode::FORBIDDEN,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403,
                   "message": "secrets \"mizzen-webhook-tls\" is forbidden"}),
        );
    });
    let err = ensure(client, NS).await.unwrap_err().to_string();
    assert!(err.starts_with("Kubernetes API: "), "{err}");
    assert!(err.contains("forbidden"), "{err}");
    server.await.unwrap();
}
