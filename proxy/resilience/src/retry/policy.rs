//! Which outcomes are worth another try: Istio's `retryOn` with Envoy's meaning.
//!
//! | condition | retries |
//! |---|---|
//! | `5xx` | any 5xx, and every upstream error (connect failure, reset, refused stream, per-try timeout) |
//! | `gateway-error` | 502, 503, 504, and every upstream error |
//! | `reset` | every upstream error (disconnect, reset, per-try timeout), no status |
//! | `connect-failure` | connect failures |
//! | `refused-stream` | HTTP/2 `REFUSED_STREAM` |
//! | `retriable-4xx` | 409 |
//! | `retriable-status-codes` | the listed codes (bare codes in `retryOn` join the list and turn it on) |
//! | `cancelled`, `deadline-exceeded`, `internal`, `resource-exhausted`, `unavailable` | that `grpc-status` (1, 4, 13, 8, 14) in the response head (a trailers-only gRPC response) |
//!
//! Unknown conditions are ignored, as Envoy does.

use std::time::Duration;

use http::Response;
use mizzen_proxy_config::Retry;

use crate::upstream::UpstreamErrorKind;

const FIVE_XX: u16 = 1 << 0;
const GATEWAY_ERROR: u16 = 1 << 1;
const RESET: u16 = 1 << 2;
const CONNECT_FAILURE: u16 = 1 << 3;
const REFUSED_STREAM: u16 = 1 << 4;
const RETRIABLE_4XX: u16 = 1 << 5;
const STATUS_CODES: u16 = 1 << 6;
const GRPC_CANCELLED: u16 = 1 << 7;
const GRPC_DEADLINE_EXCEEDED: u16 = 1 << 8;
const GRPC_INTERNAL: u16 = 1 << 9;
const GRPC_RESOURCE_EXHAUSTED: u16 = 1 << 10;
const GRPC_UNAVAILABLE: u16 = 1 << 11;
const GRPC_ANY: u16 = GRPC_CANCELLED
    | GRPC_DEADLINE_EXCEEDED
    | GRPC_INTERNAL
    | GRPC_RESOURCE_EXHAUSTED
    | GRPC_UNAVAILABLE;
/// Named once: a lookup by `&str` parses the name every time.
const GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");

/// Envoy's default backoff base interval.
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(25);

/// A parsed retry policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first try.
    pub attempts: u32,
    pub per_try_timeout: Option<Duration>,
    pub backoff_base: Duration,
    /// `retryRemoteLocalities`: a retry may go to a priority level (locality) no earlier try
    /// of the request went to.
    pub remote_localities: bool,
    conditions: u16,
    status_codes: Vec<u16>,
}

impl RetryPolicy {
    pub fn new(retry: &Retry) -> Self {
        let mut conditions = 0;
        let mut status_codes = retry.retriable_status_codes.clone();
        for cond in &retry.retry_on {
            let cond = cond.trim();
            conditions |= match cond {
                "5xx" => FIVE_XX,
                "gateway-error" => GATEWAY_ERROR,
                "reset" => RESET,
                "connect-failure" => CONNECT_FAILURE,
                "refused-stream" => REFUSED_STREAM,
                "retriable-4xx" => RETRIABLE_4XX,
                "retriable-status-codes" => STATUS_CODES,
                "cancelled" => GRPC_CANCELLED,
                "deadline-exceeded" => GRPC_DEADLINE_EXCEEDED,
                "internal" => GRPC_INTERNAL,
                "resource-exhausted" => GRPC_RESOURCE_EXHAUSTED,
                "unavailable" => GRPC_UNAVAILABLE,
                other => match other.parse::<u16>() {
                    Ok(code) => {
                        status_codes.push(code);
                        STATUS_CODES
                    }
                    Err(_) => 0,
                },
            };
        }
        status_codes.sort_unstable();
        status_codes.dedup();
        Self {
            attempts: retry.attempts,
            per_try_timeout: retry
                .per_try_timeout_ms
                .filter(|ms| *ms > 0)
                .map(Duration::from_millis),
            backoff_base: retry
                .backoff_ms
                .filter(|ms| *ms > 0)
                .map(Duration::from_millis)
                .unwrap_or(DEFAULT_BACKOFF_BASE),
            remote_localities: retry.retry_remote_localities,
            conditions,
            status_codes,
        }
    }

    fn has(&self, condition: u16) -> bool {
        self.conditions & condition != 0
    }

    /// Whether a response with this head deserves another try.
    pub fn retries_response<B>(&self, response: &Response<B>) -> bool {
        let status = response.status().as_u16();
        if (self.has(FIVE_XX) && (500..600).contains(&status))
            || (self.has(GATEWAY_ERROR) && matches!(status, 502..=504))
            || (self.has(RETRIABLE_4XX) && status == 409)
            || (self.has(STATUS_CODES) && self.status_codes.contains(&status))
        {
            return true;
        }
        if !self.has(GRPC_ANY) {
            return false;
        }
        let grpc = response
            .headers()
            .get(GRPC_STATUS)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u8>().ok());
        match grpc {
            Some(1) => self.has(GRPC_CANCELLED),
            Some(4) => self.has(GRPC_DEADLINE_EXCEEDED),
            Some(8) => self.has(GRPC_RESOURCE_EXHAUSTED),
            Some(13) => self.has(GRPC_INTERNAL),
            Some(14) => self.has(GRPC_UNAVAILABLE),
            _ => false,
        }
    }

    /// Whether an upstream failure deserves another try.
    pub fn retries_error(&self, kind: UpstreamErrorKind) -> bool {
        if self.has(FIVE_XX | GATEWAY_ERROR | RESET) {
            return true;
        }
        match kind {
            UpstreamErrorKind::ConnectFailure => self.has(CONNECT_FAILURE),
            UpstreamErrorKind::RefusedStream => self.has(REFUSED_STREAM),
            UpstreamErrorKind::Reset | UpstreamErrorKind::Timeout => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    fn policy(retry_on: &[&str], codes: &[u16]) -> RetryPolicy {
        RetryPolicy::new(&Retry {
            attempts: 3,
            per_try_timeout_ms: None,
            retry_on: retry_on.iter().map(|s| s.to_string()).collect(),
            retriable_status_codes: codes.to_vec(),
            backoff_ms: None,
            retry_remote_localities: false,
        })
    }

    fn status(code: u16) -> Response<()> {
        let mut r = Response::new(());
        *r.status_mut() = StatusCode::from_u16(code).unwrap();
        r
    }

    fn grpc(code: &str) -> Response<()> {
        let mut r = Response::new(());
        r.headers_mut().insert("grpc-status", code.parse().unwrap());
        r
    }

    #[test]
    fn five_xx_retries_every_5xx_and_every_error() {
        let p = policy(&["5xx"], &[]);
        assert!(p.retries_response(&status(500)));
        assert!(p.retries_response(&status(503)));
        assert!(!p.retries_response(&status(404)));
        assert!(!p.retries_response(&status(200)));
        for kind in [
            UpstreamErrorKind::ConnectFailure,
            UpstreamErrorKind::Reset,
            UpstreamErrorKind::RefusedStream,
            UpstreamErrorKind::Timeout,
        ] {
            assert!(p.retries_error(kind), "{kind}");
        }
    }

    #[test]
    fn gateway_error_is_502_to_504() {
        let p = policy(&["gateway-error"], &[]);
        assert!(!p.retries_response(&status(500)));
        assert!(p.retries_response(&status(502)));
        assert!(p.retries_response(&status(503)));
        assert!(p.retries_response(&status(504)));
        assert!(p.retries_error(UpstreamErrorKind::Timeout));
    }

    #[test]
    fn connect_failure_and_refused_stream_are_narrow() {
        let p = policy(&["connect-failure", "refused-stream"], &[]);
        assert!(p.retries_error(UpstreamErrorKind::ConnectFailure));
        assert!(p.retries_error(UpstreamErrorKind::RefusedStream));
        assert!(!p.retries_error(UpstreamErrorKind::Reset));
        assert!(!p.retries_error(UpstreamErrorKind::Timeout));
        assert!(!p.retries_response(&status(503)));
    }

    #[test]
    fn reset_retries_errors_not_statuses() {
        let p = policy(&["reset"], &[]);
        assert!(p.retries_error(UpstreamErrorKind::Reset));
        assert!(p.retries_error(UpstreamErrorKind::Timeout));
        assert!(!p.retries_response(&status(503)));
    }

    #[test]
    fn retriable_4xx_is_409_only() {
        let p = policy(&["retriable-4xx"], &[]);
        assert!(p.retries_response(&status(409)));
        assert!(!p.retries_response(&status(429)));
    }

    #[test]
    fn status_codes_listed_or_bare() {
        let p = policy(&["retriable-status-codes"], &[429]);
        assert!(p.retries_response(&status(429)));
        assert!(!p.retries_response(&status(503)));
        let bare = policy(&[" 418 ", "503"], &[]);
        assert!(bare.retries_response(&status(418)));
        assert!(bare.retries_response(&status(503)));
        assert!(!bare.retries_response(&status(500)));
        // Codes listed without the condition are not retried.
        let off = policy(&["5xx"], &[429]);
        assert!(!off.retries_response(&status(429)));
    }

    #[test]
    fn grpc_conditions_read_grpc_status() {
        let p = policy(
            &[
                "cancelled",
                "deadline-exceeded",
                "internal",
                "resource-exhausted",
                "unavailable",
            ],
            &[],
        );
        for code in ["1", "4", "8", "13", "14"] {
            assert!(p.retries_response(&grpc(code)), "grpc-status {code}");
        }
        for code in ["0", "2", "5", "16", "junk"] {
            assert!(!p.retries_response(&grpc(code)), "grpc-status {code}");
        }
        let only = policy(&["unavailable"], &[]);
        assert!(only.retries_response(&grpc("14")));
        assert!(!only.retries_response(&grpc("1")));
    }

    #[test]
    fn istio_default_policy() {
        let p = RetryPolicy::new(&Retry::istio_default());
        assert_eq!(p.attempts, 2);
        assert!(p.retries_response(&status(503)));
        assert!(!p.retries_response(&status(500)));
        assert!(p.retries_response(&grpc("14")));
        assert!(p.retries_response(&grpc("1")));
        assert!(p.retries_error(UpstreamErrorKind::ConnectFailure));
        assert!(p.retries_error(UpstreamErrorKind::RefusedStream));
        assert!(!p.retries_error(UpstreamErrorKind::Reset));
        assert_eq!(p.backoff_base, DEFAULT_BACKOFF_BASE);
    }

    #[test]
    fn unknown_conditions_are_ignored_and_durations_parsed() {
        let mut r = Retry::istio_default();
        r.retry_on = vec!["envoy-ratelimited".into()];
        r.per_try_timeout_ms = Some(250);
        r.backoff_ms = Some(10);
        let p = RetryPolicy::new(&r);
        assert!(!p.retries_response(&status(503)));
        assert!(!p.retries_error(UpstreamErrorKind::ConnectFailure));
        assert_eq!(p.per_try_timeout, Some(Duration::from_millis(250)));
        assert_eq!(p.backoff_base, Duration::from_millis(10));
    }
}
