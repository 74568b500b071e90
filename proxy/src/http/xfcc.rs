//! `x-forwarded-client-cert` (XFCC) as Istio's proxies pass it on, so that an app can learn who
//! called it and trust what it reads:
//! - a sidecar's inbound side appends the element of an mTLS client's certificate to what the
//!   request carries, and removes the header from a plaintext request, which anyone could have
//!   written (Envoy's `APPEND_FORWARD`);
//! - its outbound side removes what the app sent (`SANITIZE`);
//! - the gateway replaces the header with the element of a client certificate (MUTUAL and
//!   ISTIO_MUTUAL servers) and removes it otherwise (`SANITIZE_SET`).
//!
//! An element holds the fields Istio asks Envoy for: `By` (this proxy's own URI SAN), `Hash`
//! (SHA-256 of the client's certificate), `Subject`, `URI` and `DNS`, e.g.
//! `By=spiffe://cluster.local/ns/a/sa/b;Hash=…;Subject="";URI=spiffe://cluster.local/ns/c/sa/d`.
//! It is made once per connection.

use std::borrow::Cow;

use http::{HeaderMap, HeaderName, HeaderValue};
use mizzen_identity::CertDetails;

pub const XFCC: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

/// The element that tells of `client`'s certificate, written by the proxy whose own certificate
/// has the URI SAN `by` (none for a gateway certificate without one).
pub fn element(by: Option<&str>, client: &CertDetails) -> Option<HeaderValue> {
    let mut fields = Vec::with_capacity(4 + client.uris.len() + client.dns.len());
    if let Some(by) = by {
        fields.push(format!("By={}", quoted_if_needed(by)));
    }
    fields.push(format!("Hash={}", client.hash));
    fields.push(format!("Subject={}", quoted(&client.subject)));
    if client.uris.is_empty() {
        // Envoy writes the key even without a value.
        fields.push("URI=".into());
    }
    for uri in &client.uris {
        fields.push(format!("URI={}", quoted_if_needed(uri)));
    }
    for dns in &client.dns {
        fields.push(format!("DNS={}", quoted_if_needed(dns)));
    }
    HeaderValue::from_str(&fields.join(";")).ok()
}

/// The element of the client certificate a TLS connection's peer presented, if any.
pub fn of_connection(by: Option<&str>, conn: &rustls::CommonState) -> Option<HeaderValue> {
    let leaf = conn.peer_certificates()?.first()?;
    match CertDetails::of(leaf) {
        Ok(details) => element(by, &details),
        Err(e) => {
            tracing::debug!(error = %e, "client certificate unreadable for x-forwarded-client-cert");
            None
        }
    }
}

/// A value with `,`, `;`, `=` or `"` in it is quoted, its quotes escaped (the header's grammar).
fn quoted_if_needed(value: &str) -> Cow<'_, str> {
    if value.contains([',', ';', '=', '"']) {
        Cow::Owned(quoted(value))
    } else {
        Cow::Borrowed(value)
    }
}

fn quoted(value: &str) -> String {
    format!("\"{}\"", value.replace('"', "\\\""))
}

/// A sidecar's inbound side: `client` is the element of the connection's mTLS client, `None`
/// on a plaintext connection.
pub fn append(headers: &mut HeaderMap, client: Option<&HeaderValue>) {
    let Some(client) = client else {
        remove(headers);
        return;
    };
    let mut joined = Vec::new();
    for earlier in headers.get_all(XFCC) {
        joined.extend_from_slice(earlier.as_bytes());
        joined.push(b',');
    }
    if joined.is_empty() {
        headers.insert(XFCC, client.clone());
        return;
    }
    joined.extend_from_slice(client.as_bytes());
    match HeaderValue::from_bytes(&joined) {
        Ok(v) => {
            headers.insert(XFCC, v);
        }
        // Joined from valid values with a comma: always valid; if not, the client's alone.
        Err(_) => {
            headers.insert(XFCC, client.clone());
        }
    }
}

/// The gateway: the element of the connection's client certificate, or nothing.
pub fn set(headers: &mut HeaderMap, client: Option<&HeaderValue>) {
    match client {
        Some(v) => {
            headers.insert(XFCC, v.clone());
        }
        None => remove(headers),
    }
}

/// A sidecar's outbound side: what the app wrote is not passed on.
pub fn sanitize(headers: &mut HeaderMap) {
    remove(headers);
}

/// Drops what the peer wrote. Few requests carry one, and a pass over a request's few names
/// (compared as `HeaderName`s: by length first) is cheaper than the hashed removal of an
/// absent name.
fn remove(headers: &mut HeaderMap) {
    static NAME: HeaderName = XFCC;
    if headers.keys().any(|k| *k == NAME) {
        headers.remove(XFCC);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(uri: &str) -> CertDetails {
        CertDetails {
            hash: "ab12".into(),
            subject: String::new(),
            uris: vec![uri.into()],
            dns: vec![],
        }
    }

    #[test]
    fn an_element_reads_as_envoys_with_istios_fields() {
        let e = element(
            Some("spiffe://cluster.local/ns/shop/sa/cart"),
            &workload("spiffe://cluster.local/ns/web/sa/front"),
        )
        .unwrap();
        assert_eq!(
            e,
            "By=spiffe://cluster.local/ns/shop/sa/cart;Hash=ab12;Subject=\"\";\
             URI=spiffe://cluster.local/ns/web/sa/front"
        );
        // A gateway's client: a subject with a quote, no URI, two DNS names, one to be quoted.
        let client = CertDetails {
            hash: "cd34".into(),
            subject: r#"CN=a "b",O=c"#.into(),
            uris: vec![],
            dns: vec!["a.example".into(), "x=y".into()],
        };
        assert_eq!(
            element(None, &client).unwrap(),
            r#"Hash=cd34;Subject="CN=a \"b\",O=c";URI=;DNS=a.example;DNS="x=y""#
        );
    }

    #[test]
    fn inbound_appends_to_what_came_and_drops_it_on_plaintext() {
        let mine = HeaderValue::from_static("By=b;Hash=h;Subject=\"\";URI=a");
        let mut h = HeaderMap::new();
        append(&mut h, Some(&mine));
        assert_eq!(h[XFCC], mine);
        let mut h = HeaderMap::new();
        h.append(XFCC, HeaderValue::from_static("Hash=1"));
        h.append(XFCC, HeaderValue::from_static("Hash=2"));
        append(&mut h, Some(&mine));
        assert_eq!(h.get_all(XFCC).iter().count(), 1);
        assert_eq!(h[XFCC], "Hash=1,Hash=2,By=b;Hash=h;Subject=\"\";URI=a");
        // Plaintext: whatever the client wrote is gone.
        append(&mut h, None);
        assert!(!h.contains_key(XFCC));
    }

    #[test]
    fn the_gateway_replaces_and_the_outbound_side_removes() {
        let mut h = HeaderMap::new();
        h.insert(XFCC, HeaderValue::from_static("By=forged"));
        set(&mut h, Some(&HeaderValue::from_static("Hash=real")));
        assert_eq!(h[XFCC], "Hash=real");
        set(&mut h, None);
        assert!(!h.contains_key(XFCC));
        h.insert(XFCC, HeaderValue::from_static("By=forged"));
        sanitize(&mut h);
        assert!(!h.contains_key(XFCC));
        // As parsed from the wire, in any case and repeated, among other headers.
        let wire = HeaderName::from_bytes(b"X-Forwarded-Client-Cert").unwrap();
        h.insert(http::header::HOST, HeaderValue::from_static("a"));
        h.append(wire.clone(), HeaderValue::from_static("By=forged"));
        h.append(wire, HeaderValue::from_static("By=again"));
        sanitize(&mut h);
        assert_eq!(h.keys().collect::<Vec<_>>(), [http::header::HOST]);
    }
}
