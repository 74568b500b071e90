//! Shared by the policy tests: requests built in one line, policies written as the rendered
//! JSON the operator produces, tokens signed with the keys under `testdata/`.

#![allow(dead_code)]

use std::{collections::BTreeMap, net::IpAddr};

use http::{HeaderMap, HeaderName, HeaderValue};
use jsonwebtoken::{Algorithm, EncodingKey, Header, jwk::Jwk};
use mizzen_policy::{Authorizer, HttpAttrs, Principal, RequestAttrs};
use mizzen_proxy_config::InboundConfig;
use serde_json::{Value, json};

/// The rendered inbound config from its JSON form.
pub fn inbound(v: Value) -> InboundConfig {
    serde_json::from_value(v).expect("test config is valid")
}

/// Labels of the workload under test.
pub fn labels() -> BTreeMap<String, String> {
    [("app", "httpbin"), ("version", "v1")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A request as the inbound path would see it.
#[derive(Clone, Debug)]
pub struct Req {
    pub principal: Option<&'static str>,
    pub source_ip: &'static str,
    pub remote_ip: Option<&'static str>,
    pub port: u16,
    pub sni: Option<&'static str>,
    pub host: &'static str,
    pub method: &'static str,
    pub path: &'static str,
    pub headers: HeaderMap,
    pub jwt: Option<Principal>,
    pub tcp: bool,
}

impl Req {
    pub fn get(path: &'static str) -> Self {
        Self {
            principal: None,
            source_ip: "10.1.2.3",
            remote_ip: None,
            port: 8080,
            sni: None,
            host: "httpbin.foo.svc.cluster.local",
            method: "GET",
            path,
            headers: HeaderMap::new(),
            jwt: None,
            tcp: false,
        }
    }

    /// A plain TCP connection on `port`.
    pub fn tcp(port: u16) -> Self {
        Self {
            tcp: true,
            port,
            ..Self::get("/")
        }
    }

    pub fn from(mut self, principal: &'static str) -> Self {
        self.principal = Some(principal);
        self
    }

    pub fn ip(mut self, ip: &'static str) -> Self {
        self.source_ip = ip;
        self
    }

    pub fn remote(mut self, ip: &'static str) -> Self {
        self.remote_ip = Some(ip);
        self
    }

    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    pub fn method(mut self, m: &'static str) -> Self {
        self.method = m;
        self
    }

    pub fn host(mut self, h: &'static str) -> Self {
        self.host = h;
        self
    }

    pub fn sni(mut self, s: &'static str) -> Self {
        self.sni = Some(s);
        self
    }

    pub fn header(mut self, k: &'static str, v: &'static str) -> Self {
        self.headers
            .append(HeaderName::from_static(k), HeaderValue::from_static(v));
        self
    }

    /// A validated JWT with these claims, as the authenticator would hand it on.
    pub fn jwt(mut self, claims: Value) -> Self {
        let s = |k: &str| {
            claims
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let audiences = match claims.get("aud") {
            Some(Value::String(a)) => vec![a.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect(),
            _ => vec![],
        };
        self.jwt = Some(Principal {
            issuer: s("iss"),
            subject: s("sub"),
            principal: format!("{}/{}", s("iss"), s("sub")),
            audiences,
            presenter: claims.get("azp").and_then(Value::as_str).map(String::from),
            claims,
        });
        self
    }

    /// Authorizes with `a` and answers the status the proxy would: 403 or 200.
    pub fn status(&self, a: &Authorizer) -> u16 {
        if a.authorize(&self.attrs()).allowed {
            200
        } else {
            mizzen_policy::authz::DENIED_STATUS
        }
    }

    pub fn attrs(&self) -> RequestAttrs<'_> {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        RequestAttrs {
            source_principal: self.principal,
            source_ip: Some(ip(self.source_ip)),
            remote_ip: self.remote_ip.map(ip),
            destination_ip: Some(ip("10.9.9.9")),
            destination_port: self.port,
            sni: self.sni,
            http: (!self.tcp).then_some(HttpAttrs {
                host: self.host,
                method: self.method,
                path: self.path,
                headers: &self.headers,
                request_principal: self.jwt.as_ref(),
            }),
        }
    }
}

/// One ALLOW/DENY/AUDIT policy selecting the test workload, in rendered form.
pub fn policy(name: &str, action: &str, rules: Value) -> Value {
    json!({"name": format!("foo/{name}"), "selector": {"app": "httpbin"}, "action": action, "rules": rules})
}

pub const ISSUER: &str = "https://issuer.example.com";

/// A signing key from `testdata/` with the `kid` its JWKS entry carries.
pub struct Signer {
    pub key: EncodingKey,
    pub alg: Algorithm,
    pub kid: &'static str,
}

impl Signer {
    pub fn rsa() -> Self {
        Self {
            key: EncodingKey::from_rsa_pem(include_bytes!("../../testdata/rsa.pem")).unwrap(),
            alg: Algorithm::RS256,
            kid: "rsa-1",
        }
    }

    /// Another RSA key that claims the same `kid`: its tokens must fail verification.
    pub fn rsa_impostor() -> Self {
        Self {
            key: EncodingKey::from_rsa_pem(include_bytes!("../../testdata/rsa-other.pem")).unwrap(),
            alg: Algorithm::RS256,
            kid: "rsa-1",
        }
    }

    pub fn ec() -> Self {
        Self {
            key: EncodingKey::from_ec_pem(include_bytes!("../../testdata/ec.pem")).unwrap(),
            alg: Algorithm::ES256,
            kid: "ec-1",
        }
    }

    pub fn sign(&self, claims: &Value) -> String {
        let mut h = Header::new(self.alg);
        h.kid = Some(self.kid.to_string());
        jsonwebtoken::encode(&h, claims, &self.key).unwrap()
    }

    pub fn jwk(&self) -> Value {
        let mut jwk = Jwk::from_encoding_key(&self.key, self.alg).unwrap();
        jwk.common.key_id = Some(self.kid.to_string());
        serde_json::to_value(jwk).unwrap()
    }
}

/// The JWKS of the RSA and EC test keys.
pub fn jwks() -> String {
    json!({"keys": [Signer::rsa().jwk(), Signer::ec().jwk()]}).to_string()
}

/// A fixed "now" for token times.
pub const NOW: u64 = 1_900_000_000;

/// Claims of a token valid at [`NOW`].
pub fn claims(sub: &str) -> Value {
    json!({"iss": ISSUER, "sub": sub, "aud": "httpbin", "iat": NOW - 10, "exp": NOW + 3600})
}
