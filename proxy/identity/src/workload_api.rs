//! Messages of the node agent's workload API.
//!
//! The transport is HTTP/1.1 over the agent's Unix socket: the proxy sends one [`SignRequest`]
//! as the JSON body and reads a streaming response of JSON lines, one [`Event`] per line, for as
//! long as the connection lives (new certificates before half-life, new roots on rotation).
//! Every message carries `"v": 1`; a message of another version is refused when decoded, so a
//! version skew between agent and proxy is an explicit error rather than a misread field. Unknown
//! fields are ignored, so a later version 1 may add optional ones.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The protocol version this crate speaks.
pub const VERSION: u32 = 1;

/// The `v` field: serializes as [`VERSION`] and refuses anything else.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Version;

impl TryFrom<u32> for Version {
    type Error = String;

    fn try_from(v: u32) -> Result<Self, Self::Error> {
        if v == VERSION {
            Ok(Version)
        } else {
            Err(format!(
                "workload API version {v} is not supported (this side speaks {VERSION})"
            ))
        }
    }
}

impl From<Version> for u32 {
    fn from(_: Version) -> u32 {
        VERSION
    }
}

/// Proxy → agent: sign this CSR for the workload the token belongs to.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignRequest {
    pub v: Version,
    /// PEM CSR whose only SAN is the workload's SPIFFE id.
    pub csr_pem: String,
    /// The pod's projected service-account token (audience `mizzen-ca`).
    pub token: String,
}

impl SignRequest {
    pub fn new(csr_pem: impl Into<String>, token: impl Into<String>) -> Self {
        SignRequest {
            v: Version,
            csr_pem: csr_pem.into(),
            token: token.into(),
        }
    }
}

impl fmt::Debug for SignRequest {
    /// The token is a bearer credential: never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignRequest")
            .field("csr_pem", &self.csr_pem)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// Agent → proxy: one line of the streaming response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A newly signed certificate: chain (leaf first, PEM), the current roots (PEM) and the leaf's
    /// expiry in seconds since the Unix epoch.
    Certificate {
        chain_pem: String,
        roots_pem: String,
        not_after: u64,
    },
    /// The trust bundle changed (root rotation) without a new certificate.
    Bundle { roots_pem: String },
    /// The request was refused or a renewal failed; the proxy keeps its still-valid certificate.
    Error { message: String },
}

/// An [`Event`] with its version, as it travels.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventLine {
    pub v: Version,
    #[serde(flatten)]
    pub event: Event,
}

/// A line that is not a valid version-1 message.
#[derive(Debug, thiserror::Error)]
#[error("workload API message: {0}")]
pub struct DecodeError(#[from] serde_json::Error);

impl Event {
    /// The event as one JSON line, newline included.
    pub fn to_line(&self) -> String {
        let line = EventLine {
            v: Version,
            event: self.clone(),
        };
        // Serializing plain strings and integers cannot fail.
        let mut json = serde_json::to_string(&line).unwrap_or_default();
        json.push('\n');
        json
    }

    /// Decodes one line (trailing newline allowed).
    pub fn from_line(line: &str) -> Result<Event, DecodeError> {
        Ok(serde_json::from_str::<EventLine>(line.trim_end())?.event)
    }
}

impl SignRequest {
    /// Decodes a request body.
    pub fn from_json(body: &[u8]) -> Result<SignRequest, DecodeError> {
        Ok(serde_json::from_slice(body)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_wire_form() {
        let req = SignRequest::new("CSR", "tok");
        let json = serde_json::to_string(&req).unwrap();
        assert_eq!(json, r#"{"v":1,"csr_pem":"CSR","token":"tok"}"#);
        assert_eq!(SignRequest::from_json(json.as_bytes()).unwrap(), req);
        assert!(!format!("{req:?}").contains("tok\""));
    }

    #[test]
    fn event_lines_round_trip() {
        let events = [
            Event::Certificate {
                chain_pem: "C".into(),
                roots_pem: "R".into(),
                not_after: 1_800_000_000,
            },
            Event::Bundle {
                roots_pem: "R".into(),
            },
            Event::Error {
                message: "token audience is not mizzen-ca".into(),
            },
        ];
        for event in events {
            let line = event.to_line();
            assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
            assert_eq!(Event::from_line(&line).unwrap(), event);
        }
        assert_eq!(
            Event::Bundle {
                roots_pem: "R".into()
            }
            .to_line(),
            "{\"v\":1,\"type\":\"bundle\",\"roots_pem\":\"R\"}\n"
        );
    }

    #[test]
    fn other_versions_and_unknown_types_are_refused() {
        let err = Event::from_line(r#"{"v":2,"type":"bundle","roots_pem":"R"}"#).unwrap_err();
        assert!(
            err.to_string()
                .contains("workload API version 2 is not supported"),
            "{err}"
        );
        assert!(Event::from_line(r#"{"type":"bundle","roots_pem":"R"}"#).is_err());
        assert!(Event::from_line(r#"{"v":1,"type":"reboot"}"#).is_err());
        assert!(SignRequest::from_json(br#"{"v":3,"csr_pem":"C","token":"t"}"#).is_err());
        // Unknown optional fields from a later minor revision are ignored.
        assert!(Event::from_line(r#"{"v":1,"type":"bundle","roots_pem":"R","extra":1}"#).is_ok());
    }
}
