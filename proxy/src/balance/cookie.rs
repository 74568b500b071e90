//! The cookie of a consistent-hash policy (`consistentHash.httpCookie`): read from a request,
//! or, when the policy has a `ttl` and the request carries none, made for it and set on its
//! response, so the client's next requests hash to the same endpoint (Envoy's behaviour).

use std::fmt::Write as _;
use std::net::SocketAddr;

use http::{HeaderMap, HeaderValue};
use mizzen_proxy_config::CookieAttribute;

use super::hash::hash64;

/// The value of cookie `name` in a request (the first one, as Envoy), without the quotes a
/// quoted value carries.
pub fn value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| unquote(v))
}

fn unquote(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v)
}

/// The cookie made for a request without one: its value, stable for a connection (so each
/// try of a retried request hashes alike), and the `Set-Cookie` header for the response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generated {
    pub value: String,
    pub set_cookie: HeaderValue,
}

/// The policy's cookie for a client at `client`; `None` when the configured name, path or
/// attributes cannot be written in a header (the request is then balanced at random).
pub fn generate(
    name: &str,
    path: Option<&str>,
    ttl_ms: u64,
    attributes: &[CookieAttribute],
    client: SocketAddr,
) -> Option<Generated> {
    let value = format!("{:016x}", hash64(client.to_string().as_bytes()));
    // Envoy's layout: the value quoted, Max-Age in whole seconds (none for 0: a session
    // cookie), Path, the attributes in order, HttpOnly.
    let mut header = format!("{name}=\"{value}\"");
    let max_age = ttl_ms / 1000;
    if max_age > 0 {
        let _ = write!(header, "; Max-Age={max_age}");
    }
    if let Some(path) = path.filter(|p| !p.is_empty()) {
        let _ = write!(header, "; Path={path}");
    }
    for a in attributes {
        let _ = match a.value.as_deref().filter(|v| !v.is_empty()) {
            Some(v) => write!(header, "; {}={v}", a.name),
            None => write!(header, "; {}", a.name),
        };
    }
    header.push_str("; HttpOnly");
    let set_cookie = HeaderValue::try_from(header).ok()?;
    Some(Generated { value, set_cookie })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 7], port))
    }

    #[test]
    fn reads_the_first_cookie_of_that_name_unquoted() {
        let mut h = HeaderMap::new();
        h.append("cookie", "a=1; session=\"abc\"".parse().unwrap());
        h.append("cookie", "session=later".parse().unwrap());
        assert_eq!(value(&h, "session"), Some("abc"));
        assert_eq!(value(&h, "a"), Some("1"));
        assert_eq!(value(&h, "sess"), None);
    }

    #[test]
    fn a_generated_cookie_is_laid_out_as_envoy_sets_it() {
        let attrs = [
            CookieAttribute {
                name: "SameSite".into(),
                value: Some("Strict".into()),
            },
            CookieAttribute {
                name: "Secure".into(),
                value: None,
            },
        ];
        let g = generate("user", Some("/shop"), 90_500, &attrs, client(40000)).unwrap();
        assert_eq!(g.value.len(), 16);
        assert!(g.value.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(
            g.set_cookie,
            format!(
                "user=\"{}\"; Max-Age=90; Path=/shop; SameSite=Strict; Secure; HttpOnly",
                g.value
            )
        );
        // A ttl of 0 makes a session cookie: no Max-Age.
        let session = generate("user", None, 0, &[], client(40000)).unwrap();
        assert_eq!(
            session.set_cookie,
            format!("user=\"{}\"; HttpOnly", session.value)
        );
    }

    #[test]
    fn the_value_is_stable_per_connection_and_differs_between_connections() {
        let a = generate("u", None, 1000, &[], client(40000)).unwrap();
        let again = generate("u", None, 1000, &[], client(40000)).unwrap();
        let b = generate("u", None, 1000, &[], client(40001)).unwrap();
        assert_eq!(a, again);
        assert_ne!(a.value, b.value);
    }

    #[test]
    fn a_name_that_cannot_be_written_in_a_header_makes_no_cookie() {
        assert_eq!(generate("bad\nname", None, 1000, &[], client(1)), None);
    }
}
