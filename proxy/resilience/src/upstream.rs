//! How the data path's client reports a failed upstream call, so that retry, outlier detection
//! and telemetry can tell a connect failure from a reset without parsing error strings.
//!
//! The client (connector and HTTP client of `mizzen-proxy`) returns, or wraps somewhere in its
//! error's `source()` chain, an [`UpstreamError`]:
//! - [`UpstreamErrorKind::ConnectFailure`]: the TCP (or TLS) connection could not be opened,
//!   including a connect timeout (`connectTimeout`) and a refused connection;
//! - [`UpstreamErrorKind::Reset`]: the connection or stream was closed or reset before a
//!   complete response head arrived;
//! - [`UpstreamErrorKind::RefusedStream`]: an HTTP/2 `RST_STREAM`/`GOAWAY` with
//!   `REFUSED_STREAM`, meaning the upstream never processed the request;
//! - [`UpstreamErrorKind::Timeout`]: no response head in time (the retry layer's per-try
//!   timeout produces this one itself).
//!
//! Any other error is treated as a reset by [`UpstreamError::classify`].

use std::{error::Error as StdError, fmt};

use http::{Response, StatusCode};

use crate::{
    BoxError,
    flags::ResponseFlags,
    reply::{LocalReply, UPSTREAM_TIMEOUT, local_reply},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UpstreamErrorKind {
    ConnectFailure,
    Reset,
    RefusedStream,
    Timeout,
}

/// A failed upstream call, with its cause.
#[derive(Debug)]
pub struct UpstreamError {
    pub kind: UpstreamErrorKind,
    source: Option<BoxError>,
}

impl UpstreamError {
    pub fn new(kind: UpstreamErrorKind) -> Self {
        Self { kind, source: None }
    }

    pub fn with_source(kind: UpstreamErrorKind, source: impl Into<BoxError>) -> Self {
        Self {
            kind,
            source: Some(source.into()),
        }
    }

    pub fn connect_failure(source: impl Into<BoxError>) -> Self {
        Self::with_source(UpstreamErrorKind::ConnectFailure, source)
    }

    pub fn reset(source: impl Into<BoxError>) -> Self {
        Self::with_source(UpstreamErrorKind::Reset, source)
    }

    /// The kind of the first `UpstreamError` in `error`'s source chain.
    pub fn find_kind(error: &(dyn StdError + 'static)) -> Option<UpstreamErrorKind> {
        let mut cur: Option<&(dyn StdError + 'static)> = Some(error);
        while let Some(e) = cur {
            if let Some(up) = e.downcast_ref::<UpstreamError>() {
                return Some(up.kind);
            }
            cur = e.source();
        }
        None
    }

    /// Like [`Self::find_kind`], but an error that says nothing is taken as a reset.
    pub fn classify(error: &(dyn StdError + 'static)) -> UpstreamErrorKind {
        Self::find_kind(error).unwrap_or(UpstreamErrorKind::Reset)
    }
}

impl UpstreamErrorKind {
    /// The response flag Envoy records for this failure.
    pub fn flag(self) -> ResponseFlags {
        match self {
            UpstreamErrorKind::ConnectFailure => ResponseFlags::UF,
            UpstreamErrorKind::Reset | UpstreamErrorKind::RefusedStream => ResponseFlags::UR,
            UpstreamErrorKind::Timeout => ResponseFlags::UT,
        }
    }

    /// The local reply Envoy gives for this failure: 504 for a timeout, 503 otherwise.
    pub fn local_reply<B: LocalReply>(self) -> Response<B> {
        let (status, text) = match self {
            UpstreamErrorKind::ConnectFailure => (
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream connect error or disconnect/reset before headers. reset reason: connection failure",
            ),
            UpstreamErrorKind::Reset => (
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream connect error or disconnect/reset before headers. reset reason: remote reset",
            ),
            UpstreamErrorKind::RefusedStream => (
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream connect error or disconnect/reset before headers. reset reason: remote refused stream reset",
            ),
            UpstreamErrorKind::Timeout => (StatusCode::GATEWAY_TIMEOUT, UPSTREAM_TIMEOUT),
        };
        local_reply(status, text, self.flag())
    }
}

impl fmt::Display for UpstreamErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UpstreamErrorKind::ConnectFailure => "connection failure",
            UpstreamErrorKind::Reset => "reset",
            UpstreamErrorKind::RefusedStream => "refused stream",
            UpstreamErrorKind::Timeout => "timeout",
        })
    }
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(source) => write!(f, "upstream {}: {source}", self.kind),
            None => write!(f, "upstream {}", self.kind),
        }
    }
}

impl StdError for UpstreamError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapper(UpstreamError);
    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "client: {}", self.0)
        }
    }
    impl StdError for Wrapper {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn found_through_the_source_chain() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let err: BoxError = Box::new(Wrapper(UpstreamError::connect_failure(io)));
        assert_eq!(
            UpstreamError::find_kind(err.as_ref()),
            Some(UpstreamErrorKind::ConnectFailure)
        );
        assert_eq!(
            err.to_string(),
            "client: upstream connection failure: refused"
        );
    }

    #[test]
    fn unknown_errors_are_resets() {
        let err: BoxError = "boom".into();
        assert_eq!(UpstreamError::find_kind(err.as_ref()), None);
        assert_eq!(
            UpstreamError::classify(err.as_ref()),
            UpstreamErrorKind::Reset
        );
    }

    #[test]
    fn local_replies_carry_envoy_flags() {
        let r: Response<http_body_util::Full<bytes::Bytes>> =
            UpstreamErrorKind::ConnectFailure.local_reply();
        assert_eq!(r.status(), 503);
        assert_eq!(ResponseFlags::from(&r), ResponseFlags::UF);
        let r: Response<http_body_util::Full<bytes::Bytes>> =
            UpstreamErrorKind::Timeout.local_reply();
        assert_eq!(r.status(), 504);
        assert_eq!(ResponseFlags::from(&r), ResponseFlags::UT);
    }
}
