//! `RequestAuthentication`: which JSON Web Tokens a workload verifies, where it finds them and
//! what it passes on.
//!
//! Also home of two small syntax checks the policies share: [`http_url_error`] and
//! [`http_token_error`].

use std::collections::HashMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::authorization_policy::{PolicyTargetReference, check_attachment};
use crate::{
    Duration, Normalize, WorkloadSelector,
    validate::{Checker, Code, Validate},
};

/// JWT verification for the selected workloads. A request with an invalid token is refused; a
/// request without one passes unauthenticated (pair with an AuthorizationPolicy to require one).
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "security.istio.io",
    version = "v1",
    kind = "RequestAuthentication",
    plural = "requestauthentications",
    namespaced,
    status = "crate::status::MeshStatus",
    derive = "PartialEq",
    derive = "Default",
    shortname = "ra",
    doc = "JWT verification for workloads (Istio RequestAuthentication).",
    category = "istio-io",
    category = "security-istio-io"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestAuthenticationSpec {
    /// Workloads the policy applies to; absent means every workload of the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// A single resource (a Gateway API gateway, a Service for a waypoint) to attach to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    /// Several resources to attach to; see `targetRef`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    /// The token issuers accepted. A rule applies when a token sits where it looks for one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jwt_rules: Vec<JwtRule>,
}

/// How to find, verify and forward the tokens of one issuer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtRule {
    /// The `iss` claim tokens must carry (usually a URL or an e-mail address).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub issuer: String,
    /// Accepted `aud` values; empty accepts tokens whose audience is the service name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// http(s) URL of the issuer's key set. Without it and without `jwks`, the keys are found
    /// through OpenID Connect discovery on the issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// Older spelling of `jwksUri` (the protobuf field name); normalised into `jwksUri`.
    #[serde(rename = "jwks_uri", default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri_legacy: Option<String>,
    /// The key set itself, as a JSON Web Key Set document (`{"keys": [...]}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<String>,
    /// Headers to read the token from; by default `Authorization: Bearer <token>` and then the
    /// `access_token` query parameter.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_headers: Vec<JwtHeader>,
    /// Query parameters to read the token from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_params: Vec<String>,
    /// Cookies to read the token from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_cookies: Vec<String>,
    /// Header that receives the verified payload (base64url JSON) for the application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_payload_to_header: Option<String>,
    /// Claims copied into request headers once the token is verified.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_claim_to_headers: Vec<ClaimToHeader>,
    /// Keep the token on the request forwarded to the application (removed by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_original_token: Option<bool>,
    /// How long to wait for the key set to be fetched (at least 1ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Claims whose string value is a space-separated list (such as `scope`), so that
    /// conditions can match single entries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub space_delimited_claims: Vec<String>,
}

/// A header that carries a token, optionally after a prefix such as `Bearer `.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtHeader {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Stripped from the header value before the token is decoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

/// Copies one claim of a verified token into a request header.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimToHeader {
    /// Header to set; letters, digits, `-` and `_`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub header: String,
    /// Claim to copy (string, number or boolean claims).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub claim: String,
}

/// Istio's limit on `spaceDelimitedClaims`.
pub const MAX_SPACE_DELIMITED_CLAIMS: usize = 64;

impl Normalize for RequestAuthenticationSpec {
    /// Moves `jwks_uri` into `jwksUri` where `jwksUri` is unset.
    fn normalize(&mut self) {
        for rule in &mut self.jwt_rules {
            if rule.jwks_uri.is_none() {
                rule.jwks_uri = rule.jwks_uri_legacy.take();
            }
        }
    }
}

impl Validate for RequestAuthenticationSpec {
    fn validate(&self, c: &mut Checker) {
        check_attachment(
            c,
            self.selector.as_ref(),
            self.target_ref.as_ref(),
            &self.target_refs,
        );

        let mut first_rule_of: HashMap<&str, usize> = HashMap::new();
        c.field("jwtRules", |c| {
            for (i, rule) in self.jwt_rules.iter().enumerate() {
                c.index(i, |c| {
                    rule.validate(c);
                    if rule.issuer.is_empty() {
                        return;
                    }
                    if let Some(first) = first_rule_of.get(rule.issuer.as_str()) {
                        c.field("issuer", |c| {
                            c.warn(
                                Code::InvalidValue,
                                format!(
                                    "issuer {:?} is already used by jwtRules[{first}]; a token matches only one of the rules",
                                    rule.issuer
                                ),
                            )
                        });
                    } else {
                        first_rule_of.insert(&rule.issuer, i);
                    }
                });
            }
        });
    }
}

impl Validate for JwtRule {
    fn validate(&self, c: &mut Checker) {
        c.require("issuer", !self.issuer.is_empty());
        non_empty_values(c, "audiences", &self.audiences);

        if self.jwks_uri_legacy.is_some() {
            c.field("jwks_uri", |c| {
                c.warn(
                    Code::Deprecated,
                    "jwks_uri is an older spelling: use jwksUri",
                )
            });
        }
        let key_sources: Vec<&str> = [
            ("jwksUri", self.jwks_uri.is_some()),
            ("jwks_uri", self.jwks_uri_legacy.is_some()),
            ("jwks", self.jwks.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect();
        if key_sources.len() > 1 {
            c.error(
                Code::ConflictingFields,
                format!(
                    "set either jwks or jwksUri, not both (got {})",
                    key_sources.join(" and ")
                ),
            );
        }
        for (name, uri) in [
            ("jwksUri", &self.jwks_uri),
            ("jwks_uri", &self.jwks_uri_legacy),
        ] {
            c.opt(name, uri.as_ref(), |c, uri| {
                if let Some(msg) = http_url_error(uri) {
                    c.error(Code::InvalidValue, msg);
                }
            });
        }
        c.opt("jwks", self.jwks.as_ref(), |c, jwks| {
            match jwks_error(jwks) {
                Some(JwksProblem::Invalid(msg)) => c.error(Code::InvalidValue, msg),
                Some(JwksProblem::NoKeys) => c.warn(
                    Code::InvalidValue,
                    "the key set has no keys: no token can be verified with it",
                ),
                None => {}
            }
        });

        c.each("fromHeaders", &self.from_headers, |c, h| {
            if h.name.is_empty() {
                c.require("name", false);
            } else if let Some(msg) = http_token_error(&h.name) {
                c.field("name", |c| c.error(Code::InvalidValue, msg));
            }
        });
        non_empty_values(c, "fromParams", &self.from_params);
        non_empty_values(c, "fromCookies", &self.from_cookies);

        c.opt(
            "outputPayloadToHeader",
            self.output_payload_to_header.as_ref(),
            |c, h| {
                if let Some(msg) = http_token_error(h) {
                    c.error(Code::InvalidValue, msg);
                }
            },
        );
        c.each(
            "outputClaimToHeaders",
            &self.output_claim_to_headers,
            |c, o| {
                if o.header.is_empty() {
                    c.require("header", false);
                } else if !o
                    .header
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                {
                    c.field("header", |c| {
                        c.error(
                            Code::InvalidValue,
                            format!(
                                "header {:?} may only contain letters, digits, - and _",
                                o.header
                            ),
                        )
                    });
                }
                c.require("claim", !o.claim.is_empty());
            },
        );

        c.opt("timeout", self.timeout.as_ref(), |c, t| {
            if t.get() < std::time::Duration::from_millis(1) {
                c.error(
                    Code::InvalidDuration,
                    format!("timeout must be at least 1ms (got {t})"),
                );
            }
        });

        if self.space_delimited_claims.len() > MAX_SPACE_DELIMITED_CLAIMS {
            c.field("spaceDelimitedClaims", |c| {
                c.error(
                    Code::InvalidValue,
                    format!(
                        "at most {MAX_SPACE_DELIMITED_CLAIMS} claims are allowed (got {})",
                        self.space_delimited_claims.len()
                    ),
                )
            });
        }
        non_empty_values(c, "spaceDelimitedClaims", &self.space_delimited_claims);
    }
}

fn non_empty_values(c: &mut Checker, name: &str, values: &[String]) {
    c.each(name, values, |c, v| {
        if v.is_empty() {
            c.error(Code::InvalidValue, "values must not be empty strings");
        }
    });
}

enum JwksProblem {
    Invalid(String),
    NoKeys,
}

/// An inline key set must be a JSON object with a `keys` array of objects that name a `kty`.
fn jwks_error(jwks: &str) -> Option<JwksProblem> {
    let invalid = |why: String| {
        Some(JwksProblem::Invalid(format!(
            "jwks must be a JSON Web Key Set, a JSON object with a \"keys\" array: {why}"
        )))
    };
    let doc: serde_json::Value = match serde_json::from_str(jwks) {
        Ok(doc) => doc,
        Err(e) => return invalid(format!("not JSON ({e})")),
    };
    let Some(keys) = doc.get("keys") else {
        return invalid("there is no \"keys\" field".into());
    };
    let Some(keys) = keys.as_array() else {
        return invalid("\"keys\" is not an array".into());
    };
    if let Some(i) = keys
        .iter()
        .position(|k| !k.get("kty").is_some_and(serde_json::Value::is_string))
    {
        return invalid(format!("key {i} has no \"kty\""));
    }
    keys.is_empty().then_some(JwksProblem::NoKeys)
}

/// Why `url` is not an absolute `http://` or `https://` URL with a host, if it is not.
pub fn http_url_error(url: &str) -> Option<String> {
    let bad = |why: &str| Some(format!("{url:?} is not a valid http(s) URL: {why}"));
    let Some((scheme, rest)) = url.split_once("://") else {
        return bad("it must start with http:// or https://");
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return bad("the scheme must be http or https");
    }
    if url.chars().any(|ch| ch.is_whitespace() || ch.is_control()) {
        return bad("it contains spaces or control characters");
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        let Some((addr, after)) = v6.split_once(']') else {
            return bad("an IPv6 host must be closed with ]");
        };
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return bad("the IPv6 host is not an address");
        }
        match after {
            "" => ("ipv6", None),
            p => match p.strip_prefix(':') {
                Some(p) => ("ipv6", Some(p)),
                None => return bad("unexpected text after the IPv6 host"),
            },
        }
    } else {
        match host_port.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        }
    };
    if host.is_empty() {
        return bad("the host is missing");
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !host.trim_end_matches('.').split('.').all(label_ok) {
        return bad("the host is not a DNS name or IP address");
    }
    if let Some(p) = port
        && !p.parse::<u16>().is_ok_and(|p| p != 0)
    {
        return bad("the port must be a number between 1 and 65535");
    }
    None
}

/// Why `name` is not an HTTP header name (an RFC 9110 token), if it is not.
pub fn http_token_error(name: &str) -> Option<String> {
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() {
        return Some("header name must not be empty".into());
    }
    (!name.bytes().all(tchar)).then(|| {
        format!("{name:?} is not a valid header name: use letters, digits and !#$%&'*+-.^_`|~")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::{Problem, Severity, validate_spec};

    fn parse(yaml: &str) -> RequestAuthenticationSpec {
        crate::testing::parse(yaml)
    }

    fn one(yaml: &str, path: &str, code: Code) -> Problem {
        crate::testing::only(validate_spec(&parse(yaml)), path, code)
    }

    const JWKS: &str = r#"{"keys":[{"kty":"RSA","e":"AQAB","kid":"k1","n":"qHFTu8Zh6VDUiRKKphbDYW-5DxoSZk8N5NPO_oRFWERZlFXs7_fo2VSzFE96Lc8k"}]}"#;

    fn api_yaml() -> String {
        format!(
            r#"
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: api
  namespace: foo
spec:
  selector:
    matchLabels:
      app: api
  jwtRules:
  - issuer: https://accounts.example.com
    audiences: [api.example.com]
    jwksUri: https://accounts.example.com/.well-known/jwks.json
    fromHeaders:
    - name: x-jwt-assertion
    - name: Authorization
      prefix: "Bearer "
    fromParams: [token]
    fromCookies: [session]
    outputPayloadToHeader: x-jwt-payload
    outputClaimToHeaders:
    - header: x-user
      claim: sub
    forwardOriginalToken: true
    timeout: 5s
    spaceDelimitedClaims: [scope]
  - issuer: testing@secure.istio.io
    jwks: '{JWKS}'
"#
        )
    }

    #[test]
    fn parses_an_istio_docs_like_policy_and_round_trips() {
        let ra: RequestAuthentication = serde_saphyr::from_str(&api_yaml()).unwrap();
        let rule = &ra.spec.jwt_rules[0];
        assert_eq!(rule.from_headers[1].prefix.as_deref(), Some("Bearer "));
        assert_eq!(rule.timeout, Some(Duration::from_secs(5)));
        assert_eq!(rule.output_claim_to_headers[0].claim, "sub");
        assert!(
            ra.spec.jwt_rules[1]
                .jwks
                .as_deref()
                .unwrap()
                .starts_with("{\"keys\"")
        );

        let json = serde_json::to_value(&ra).unwrap();
        assert_eq!(json["spec"]["jwtRules"][0]["forwardOriginalToken"], true);
        let back: RequestAuthentication = serde_json::from_value(json).unwrap();
        assert_eq!(back, ra);
        assert_eq!(validate_spec(&ra.spec), vec![]);
    }

    #[test]
    fn crd_has_istio_names() {
        use kube::CustomResourceExt;
        let crd = RequestAuthentication::crd();
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("requestauthentications.security.istio.io")
        );
        assert_eq!(
            crd.spec.names.short_names.as_deref(),
            Some(&["ra".to_string()][..])
        );
    }

    #[test]
    fn legacy_jwks_uri_is_normalised_and_warned() {
        let yaml = "jwtRules:\n- issuer: a\n  jwks_uri: https://a.example/keys\n";
        let p = one(yaml, "spec.jwtRules[0].jwks_uri", Code::Deprecated);
        assert_eq!(p.severity, Severity::Warn);
        assert!(p.message.contains("jwksUri"), "{p}");

        let mut spec = parse(yaml);
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["jwtRules"][0]["jwks_uri"], "https://a.example/keys");
        spec.normalize();
        assert_eq!(
            spec.jwt_rules[0].jwks_uri.as_deref(),
            Some("https://a.example/keys")
        );
        assert_eq!(spec.jwt_rules[0].jwks_uri_legacy, None);
        assert_eq!(validate_spec(&spec), vec![]);
    }

    #[test]
    fn issuer_is_required() {
        one(
            "jwtRules:\n- jwksUri: https://a.example/keys\n",
            "spec.jwtRules[0].issuer",
            Code::MissingField,
        );
    }

    #[test]
    fn jwks_and_jwks_uri_conflict() {
        let p = one(
            &format!(
                "jwtRules:\n- issuer: a\n  jwksUri: https://a.example/keys\n  jwks: '{JWKS}'\n"
            ),
            "spec.jwtRules[0]",
            Code::ConflictingFields,
        );
        assert!(
            p.message.contains("jwks") && p.message.contains("jwksUri"),
            "{p}"
        );
    }

    #[test]
    fn jwks_uri_must_be_http() {
        let p = one(
            "jwtRules:\n- issuer: a\n  jwksUri: ftp://a.example/keys\n",
            "spec.jwtRules[0].jwksUri",
            Code::InvalidValue,
        );
        assert!(p.message.contains("ftp://a.example/keys"), "{p}");
        for ok in [
            "https://a.example/keys",
            "http://keys:8080/jwks.json",
            "https://[::1]:8443/k",
            "https://10.0.0.1/k?x=1",
            "HTTPS://A.EXAMPLE",
        ] {
            assert_eq!(http_url_error(ok), None, "{ok}");
        }
        for bad in [
            "a.example/keys",
            "https://",
            "https:///x",
            "https://a b/",
            "https://a:99999/",
            "https://a..b/",
        ] {
            assert!(http_url_error(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn inline_jwks_must_be_a_key_set() {
        for (jwks, needle) in [
            ("not json", "not JSON"),
            ("[]", "no \\\"keys\\\""),
            ("{\"keys\": {}}", "not an array"),
            ("{\"keys\": [{\"n\": \"x\"}]}", "key 0"),
        ] {
            let p = one(
                &format!("jwtRules:\n- issuer: a\n  jwks: '{jwks}'\n"),
                "spec.jwtRules[0].jwks",
                Code::InvalidValue,
            );
            assert!(format!("{:?}", p.message).contains(needle), "{p}");
        }
        let p = one(
            "jwtRules:\n- issuer: a\n  jwks: '{\"keys\": []}'\n",
            "spec.jwtRules[0].jwks",
            Code::InvalidValue,
        );
        assert_eq!(p.severity, Severity::Warn);
    }

    #[test]
    fn header_names() {
        one(
            "jwtRules:\n- issuer: a\n  fromHeaders:\n  - prefix: 'Bearer '\n",
            "spec.jwtRules[0].fromHeaders[0].name",
            Code::MissingField,
        );
        one(
            "jwtRules:\n- issuer: a\n  fromHeaders:\n  - name: 'x jwt'\n",
            "spec.jwtRules[0].fromHeaders[0].name",
            Code::InvalidValue,
        );
        one(
            "jwtRules:\n- issuer: a\n  outputPayloadToHeader: 'x:payload'\n",
            "spec.jwtRules[0].outputPayloadToHeader",
            Code::InvalidValue,
        );
        one(
            "jwtRules:\n- issuer: a\n  outputClaimToHeaders:\n  - header: x.user\n    claim: sub\n",
            "spec.jwtRules[0].outputClaimToHeaders[0].header",
            Code::InvalidValue,
        );
        one(
            "jwtRules:\n- issuer: a\n  outputClaimToHeaders:\n  - header: x-user\n",
            "spec.jwtRules[0].outputClaimToHeaders[0].claim",
            Code::MissingField,
        );
        one(
            "jwtRules:\n- issuer: a\n  fromParams: ['']\n",
            "spec.jwtRules[0].fromParams[0]",
            Code::InvalidValue,
        );
    }

    #[test]
    fn timeout_at_least_a_millisecond() {
        one(
            "jwtRules:\n- issuer: a\n  timeout: 0s\n",
            "spec.jwtRules[0].timeout",
            Code::InvalidDuration,
        );
    }

    #[test]
    fn duplicate_issuers_warn() {
        let p = one(
            "jwtRules:\n- issuer: a\n- issuer: b\n- issuer: a\n  fromCookies: [s]\n",
            "spec.jwtRules[2].issuer",
            Code::InvalidValue,
        );
        assert_eq!(p.severity, Severity::Warn);
        assert!(p.message.contains("jwtRules[0]"), "{p}");
    }

    #[test]
    fn attachment_is_shared_with_authorization_policy() {
        let p = validate_spec(&parse(
            "selector:\n  matchLabels:\n    app: a\ntargetRefs:\n- kind: Gateway\n  group: gateway.networking.k8s.io\n  name: gw\n",
        ));
        assert_eq!(
            (p[0].path.as_str(), p[0].code),
            ("spec", Code::ConflictingFields)
        );
    }

    #[test]
    fn too_many_space_delimited_claims() {
        let claims: Vec<String> = (0..65).map(|i| format!("c{i}")).collect();
        one(
            &format!(
                "jwtRules:\n- issuer: a\n  spaceDelimitedClaims: [{}]\n",
                claims.join(",")
            ),
            "spec.jwtRules[0].spaceDelimitedClaims",
            Code::InvalidValue,
        );
    }
}
